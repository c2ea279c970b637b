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
from pvlens.core.device import resolved_dtype_name
from pvlens.core.fingerprint import file_hash, model_fingerprint, tensor_hash
from pvlens.errors import InputError
from pvlens.vectors.directions import check_methods, mean_difference, method_key, method_tensors
from pvlens.vectors.persona import PersonaVectors
from pvlens.vectors.rollouts import Rollout, read_rollouts

ACTIVATION_DTYPE = "auto"
"""Compute dtype of the recomputed activations ("auto": bf16 where the CPU is fast at it); the
dtype it resolves to is part of a saved file's inputs."""
MIN_MATCH_COSINE = 0.99
"""Recomputed vs stored mean difference: lowest per-layer cosine accepted as 'same rollouts'."""


def pair_rows(pos: Sequence[Rollout], neg: Sequence[Rollout]) -> tuple[list[int], list[int]]:
    """Rows of `pos` and `neg` that share a pair key (same question, instruction, sample), aligned."""
    where = {r.pair_key: j for j, r in enumerate(neg)}
    matched = sorted((r.pair_key, i) for i, r in enumerate(pos) if r.pair_key in where)
    if len(matched) < 2:
        raise InputError(f"only {len(matched)} kept pos/neg pairs; PCA of differences needs ≥ 2")
    return [i for _, i in matched], [where[k] for k, _ in matched]


def kept_rollouts(rollouts: Sequence[Rollout]) -> tuple[list[Rollout], list[Rollout]]:
    """(pos, neg) rollouts marked kept, in file order (the rows the mean difference was built from)."""
    return ([r for r in rollouts if r.kept and r.polarity == "pos"],
            [r for r in rollouts if r.kept and r.polarity == "neg"])


def kept_activations(
    model: HookedTransformer, pos: Sequence[Rollout], neg: Sequence[Rollout], reductions: Sequence[str],
    batch_size: int = 16,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per reduction, `[n, n_layers, d_model]` activations of the kept pos and neg replies."""
    tok = model.tokenizer
    return tuple(  # type: ignore[return-value]
        collect(model, [r.chat(tok) for r in rs], list(reductions), batch_size=batch_size, dtype=ACTIVATION_DTYPE,
                progress=False)
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


def methods_record(methods: Sequence[str], n_pos: int, n_neg: int, n_pairs: int) -> dict[str, object]:
    """Metadata saying which methods a file holds, their tensor names and the sample counts."""
    return {"available": ["mean", *[m for m in methods if m != "mean"]], "n_pos": n_pos, "n_neg": n_neg,
            "n_pairs": n_pairs, "keys": {m: method_key("<reduction>", m) for m in methods},
            "scale": "pca/probe rescaled per layer to the mean difference's norm"}


def directions_inputs(model: HookedTransformer, vecs: PersonaVectors, rollouts_path: str | Path,
                      methods: Sequence[str], seed: int) -> dict[str, object]:
    """Everything the added directions depend on (a saved file is reused only when all are equal)."""
    return {"model": model_fingerprint(model), "rollouts": file_hash(rollouts_path), "seed": seed,
            "methods": sorted(methods), "vectors": {k: tensor_hash(vecs.tensors[k]) for k in base_reductions(vecs)},
            "compute_dtype": resolved_dtype_name(ACTIVATION_DTYPE, model.W_E.device, model.cfg.dtype)}


def load_or_add_directions(
    model: HookedTransformer, vecs: PersonaVectors, rollouts_path: str | Path, saved: Path,
    methods: Sequence[str] = ("pca", "probe"), seed: int = 0,
) -> PersonaVectors:
    """`saved` if it was made from exactly these inputs, else `add_directions` (and save it there)."""
    methods = [m for m in check_methods(methods) if m != "mean"]
    if saved.exists():
        old = PersonaVectors.load(saved)
        if old.metadata.get("methods", {}).get("inputs") == directions_inputs(model, vecs, rollouts_path, methods, seed):
            return old
    new = add_directions(model, vecs, rollouts_path, methods, seed=seed)
    new.save(saved)
    return new


def add_directions(
    model: HookedTransformer, vecs: PersonaVectors, rollouts_path: str | Path,
    methods: Sequence[str] = ("pca", "probe"), batch_size: int = 16, seed: int = 0,
) -> PersonaVectors:
    """`vecs` with `methods`' tensors added for every base reduction (mean stays the default)."""
    methods = [m for m in check_methods(methods) if m != "mean"]
    pos_r, neg_r = kept_rollouts(read_rollouts(Path(rollouts_path)))
    if min(len(pos_r), len(neg_r)) < 2:
        raise InputError(f"{rollouts_path} has {len(pos_r)} kept pos and {len(neg_r)} kept neg rollouts; need ≥ 2 each")
    pos, neg = kept_activations(model, pos_r, neg_r, base_reductions(vecs), batch_size)
    match = check_same_source(vecs, pos, neg, str(rollouts_path))
    pairs = pair_rows(pos_r, neg_r)
    extra = method_tensors(pos, neg, methods, seed, pairs)
    meta = {**vecs.metadata, "methods": methods_record(methods, len(pos_r), len(neg_r), len(pairs[0]))}
    meta["methods"]["recomputed_mean_cosine_min"] = min(match)
    meta["methods"]["inputs"] = directions_inputs(model, vecs, rollouts_path, methods, seed)
    return PersonaVectors({**vecs.tensors, **extra}, meta, vecs.reduction)
