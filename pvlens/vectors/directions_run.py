"""Add the other direction methods to an existing vectors file from its saved rollouts.

No regeneration: the kept rollouts are read back, one forward pass per kept reply recomputes
their activations (pvlens.core.activations.collect), and `pvlens.vectors.directions` turns them
into `pca` / `probe` directions stored next to the mean difference. Before anything is written
the recomputed mean difference is compared with the file's: if they disagree, the rollouts (or
the model) are not the ones the vectors were made from and the command refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.errors import InputError
from pvlens.vectors.directions import check_methods, mean_difference, method_key, method_tensors
from pvlens.vectors.persona import PersonaVectors
from pvlens.vectors.rollouts import Rollout, read_rollouts

MIN_MATCH_COSINE = 0.99
"""Recomputed vs stored mean difference: lowest per-layer cosine accepted as 'same rollouts'."""


def kept_pairs(rollouts: Sequence[Rollout]) -> tuple[list[Rollout], list[Rollout]]:
    """(pos, neg) kept rollouts of the pairs where both sides were kept, aligned by pair key."""
    by_key: dict[tuple[int, int, int], dict[str, Rollout]] = {}
    for r in rollouts:
        if r.kept:
            by_key.setdefault(r.pair_key, {})[r.polarity] = r
    keys = sorted(k for k, pair in by_key.items() if {"pos", "neg"} <= set(pair))
    if len(keys) < 2:
        raise InputError(f"only {len(keys)} kept pos/neg pairs in the rollouts; directions need ≥ 2")
    return [by_key[k]["pos"] for k in keys], [by_key[k]["neg"] for k in keys]


def pair_activations_from_rollouts(
    model: HookedTransformer, rollouts: Sequence[Rollout], reductions: Sequence[str], batch_size: int = 16,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per reduction, `[n_pairs, n_layers, d_model]` activations of the kept pos and neg replies."""
    pos, neg = kept_pairs(rollouts)
    tok = model.tokenizer
    return tuple(  # type: ignore[return-value]
        collect(model, [r.chat(tok) for r in rs], list(reductions), batch_size=batch_size, progress=False)
        for rs in (pos, neg)
    )


def base_reductions(vecs: PersonaVectors) -> list[str]:
    """The file's mean-difference reductions (names without a `:method` suffix)."""
    return [k for k in vecs.tensors if ":" not in k]


def check_same_source(vecs: PersonaVectors, pos: dict[str, Tensor], neg: dict[str, Tensor], where: str) -> list[float]:
    """Per-layer cosine of the recomputed and stored mean difference; refuses below MIN_MATCH_COSINE."""
    red = base_reductions(vecs)[0]
    cos = torch.nn.functional.cosine_similarity(mean_difference(pos[red], neg[red]), vecs.tensors[red], dim=-1)
    if float(cos.min()) < MIN_MATCH_COSINE:
        raise InputError(
            f"the mean difference recomputed from {where} differs from the vectors file (lowest per-layer "
            f"cosine {float(cos.min()):.3f} < {MIN_MATCH_COSINE}): these rollouts or this model are not "
            "the ones the vectors were extracted from; pass the extraction's own rollouts.jsonl and model"
        )
    return [round(float(c), 5) for c in cos]


def add_directions(
    model: HookedTransformer, vecs: PersonaVectors, rollouts_path: str | Path,
    methods: Sequence[str] = ("pca", "probe"), batch_size: int = 16, seed: int = 0,
) -> PersonaVectors:
    """`vecs` with `methods`' tensors added for every base reduction (mean stays the default)."""
    methods = [m for m in check_methods(methods) if m != "mean"]
    rollouts = read_rollouts(Path(rollouts_path))
    pos, neg = pair_activations_from_rollouts(model, rollouts, base_reductions(vecs), batch_size)
    match = check_same_source(vecs, pos, neg, str(rollouts_path))
    extra = method_tensors(pos, neg, methods, seed)
    meta = {**vecs.metadata, "methods": {
        "available": ["mean", *methods], "n_pairs": int(next(iter(pos.values())).shape[0]),
        "recomputed_mean_cosine_min": min(match), "keys": {m: method_key("<reduction>", m) for m in methods},
    }}
    return PersonaVectors({**vecs.tensors, **extra}, meta, vecs.reduction)
