"""Decompose a persona vector into SAE features (the paper's SAE decomposition).

Per top feature (ranked by decoder cosine, `pvlens.sae.ranking`): its cosine and encoder
score, the corpus contexts where it fires most (`pvlens.sae.contexts`), and the output tokens
its decoder direction promotes directly (through the final norm's weight and W_U, ignoring the
norm's scale). `sparse_reconstruction` says how well k features rebuild the vector;
`feature_steering` (`pvlens.sae.steering`) steers with one feature's decoder direction.
This module assembles the report; the functions it uses stay importable from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.sae.contexts import Context, contexts_html, feature_activations, top_contexts
from pvlens.sae.corpus import Document
from pvlens.sae.loading import LoadedSae
from pvlens.sae.ranking import (
    decoder_cosines,
    encoder_scores,
    promoted_tokens,
    sparse_reconstruction,
)
from pvlens.sae.steering import default_judge, feature_steering
from pvlens.vectors.coerce import direction

__all__ = [
    "Context", "FeatureReport", "contexts_html", "decoder_cosines", "decompose", "default_judge",
    "encoder_scores", "feature_activations", "feature_steering", "load_vector", "promoted_tokens",
    "sparse_reconstruction", "text_table", "to_json", "top_contexts",
]


def load_vector(path: str | Path, layer: int, reduction: str | None = None) -> Float[Tensor, " d_model"]:
    """Row `layer` of a persona-vectors file or run folder (`pvlens.vectors.coerce.direction`)."""
    return direction(Path(path), layer, reduction)


@dataclass
class FeatureReport:
    """One feature's entry in a decomposition."""

    feature: int
    cosine: float
    """cos(decoder row, persona vector)."""
    encoder_score: float
    """v · W_enc[:, feature] (pre-activation change when v is added)."""
    rank_by_encoder: int
    """Rank of this feature in the encoder ranking (0 = first)."""
    promoted: list[tuple[str, float]] = field(default_factory=list)
    """Tokens the decoder direction promotes most, with their logit change."""
    contexts: list[Context] = field(default_factory=list)
    """Top-activating contexts in the corpus."""


def decompose(
    model: HookedTransformer,
    loaded: LoadedSae,
    vector: Float[Tensor, " d_model"],
    docs: Sequence[Document] | None = None,
    top: int = 20,
    n_contexts: int = 5,
    context_tokens: int | None = 200_000,
    ks: Sequence[int] = (1, 5, 20),
) -> dict[str, Any]:
    """Rankings, per-feature interpretation and k-sparse reconstruction of one vector."""
    if vector.shape[-1] != loaded.sae.cfg.d_in:
        raise ValueError(f"vector has {vector.shape[-1]} dims, the SAE reads {loaded.sae.cfg.d_in}")
    cos = decoder_cosines(loaded.sae, vector)
    enc = encoder_scores(loaded.sae, vector)
    enc_rank = torch.empty_like(enc, dtype=torch.long)
    enc_rank[enc.argsort(descending=True)] = torch.arange(len(enc))
    order = cos.argsort(descending=True)[:top].tolist()
    contexts = top_contexts(model, loaded, docs, order, n_contexts, n_tokens=context_tokens) if docs else {}
    reports = [
        FeatureReport(
            feature=f, cosine=float(cos[f]), encoder_score=float(enc[f]), rank_by_encoder=int(enc_rank[f]),
            promoted=promoted_tokens(model, loaded.sae.W_dec[f]), contexts=contexts.get(f, []),
        )
        for f in order
    ]
    return {
        "layer": loaded.layer,
        "vector_norm": float(vector.norm()),
        "features": reports,
        "top_by_encoder": [
            {"feature": int(i), "encoder_score": float(enc[i]), "cosine": float(cos[i])}
            for i in enc.argsort(descending=True)[:top].tolist()
        ],
        "most_negative_cosine": [
            {"feature": int(i), "cosine": float(cos[i])} for i in cos.argsort()[:5].tolist()
        ],
        "sparse_reconstruction": sparse_reconstruction(loaded.sae, vector, ks),
    }


def text_table(result: dict[str, Any]) -> str:
    """A plain-text report of a decomposition."""
    lines = [f"layer {result['layer']}  |v| = {result['vector_norm']:.3g}", "",
             "k-sparse reconstruction (cosine with v):"]
    for r in result["sparse_reconstruction"]:
        lines.append(f"  k={r['k']:<3d} omp={r['omp']:.3f}  top-cosine={r['top_cosine']:.3f}")
    lines += ["", f"{'rank':>4} {'feature':>7} {'cos':>6} {'enc':>8} {'enc-rank':>8}  promoted tokens"]
    for i, fr in enumerate(result["features"]):
        promo = " ".join(repr(t) for t, _ in fr.promoted[:6])
        lines.append(f"{i:>4} {fr.feature:>7} {fr.cosine:>6.3f} {fr.encoder_score:>8.2f} "
                     f"{fr.rank_by_encoder:>8}  {promo}")
    for fr in result["features"]:
        if not fr.contexts:
            continue
        lines += ["", f"feature {fr.feature} (cos {fr.cosine:.3f}) top contexts:"]
        for c in fr.contexts:
            lines.append(f"  {c.activation:7.2f}  {c.text()}")
    if result.get("steering"):
        lines += ["", "feature steering (mean trait score):"]
        for row in result["steering"]:
            feat = "" if row["feature"] is None else f" {row['feature']}"
            score = "n/a" if row["trait_score"] is None else f"{row['trait_score']:.1f}"
            coh = "" if row.get("coherence") is None else f"  coherence={row['coherence']:.1f}"
            lines.append(f"  {row['kind']}{feat:<8} alpha={row['alpha']:<5} score={score}{coh}")
    return "\n".join(lines) + "\n"


def to_json(result: dict[str, Any]) -> str:
    """The decomposition as JSON (dataclasses flattened)."""
    def conv(o: object) -> dict[str, Any]:
        if isinstance(o, FeatureReport | Context):
            return asdict(o)
        raise TypeError(type(o))

    return json.dumps(result, default=conv, indent=2)
