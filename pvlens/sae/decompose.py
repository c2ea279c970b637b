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

from pvlens.sae.contexts import (
    Context,
    contexts_from_scan,
    contexts_html,
    feature_activations,
    top_contexts,
)
from pvlens.sae.corpus import Document
from pvlens.sae.featurestats import feature_stats, scan_features
from pvlens.sae.loading import LoadedSae
from pvlens.sae.nulls import ranking_null
from pvlens.sae.ranking import (
    decoder_cosines,
    encoder_scores,
    promoted_tokens,
    sparse_reconstruction,
    sparse_reconstruction_null,
    suppressed_tokens,
)
from pvlens.sae.steering import default_judge, feature_steering, steering_summary
from pvlens.vectors.coerce import direction

__all__ = [
    "Context", "FeatureReport", "contexts_html", "decoder_cosines", "decompose", "default_judge",
    "encoder_scores", "feature_activations", "feature_steering", "load_vector", "promoted_tokens",
    "sparse_reconstruction", "steering_summary", "text_table", "to_json", "top_contexts",
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
    suppressed: list[tuple[str, float]] = field(default_factory=list)
    """Tokens the decoder direction suppresses most."""
    above_null_p99: bool = False
    """cosine > the 99th percentile of the max-over-latents |cos| of random directions."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Firing rate, activation histogram, role fractions of the top activations (featurestats)."""
    persona_cosines: dict[str, float] = field(default_factory=dict)
    """cos(decoder row, each persona vector given)."""


def decompose(
    model: HookedTransformer,
    loaded: LoadedSae,
    vector: Float[Tensor, " d_model"],
    docs: Sequence[Document] | None = None,
    top: int = 20,
    n_contexts: int = 5,
    context_tokens: int | None = 200_000,
    ks: Sequence[int] = (1, 2, 5, 10, 20, 50),
    n_null: int = 200,
    persona_vectors: dict[str, Tensor] | None = None,
    n_top_roles: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Rankings with their random-direction null, per-feature interpretation (contexts, role
    fractions, histogram, logit effects, persona cosines) and k-sparse reconstruction."""
    if vector.shape[-1] != loaded.sae.cfg.d_in:
        raise ValueError(f"vector has {vector.shape[-1]} dims, the SAE reads {loaded.sae.cfg.d_in}")
    cos = decoder_cosines(loaded.sae, vector)
    enc = encoder_scores(loaded.sae, vector)
    enc_rank = torch.empty_like(enc, dtype=torch.long)
    enc_rank[enc.argsort(descending=True)] = torch.arange(len(enc))
    order = cos.argsort(descending=True)[:top].tolist()
    null = ranking_null(loaded.sae, float(vector.norm()), n_null, seed, ranks=top)
    contexts, stats = _interpret(model, loaded, docs, order, n_contexts, context_tokens, n_top_roles, seed)
    p99 = null["decoder_abs_cosine"]["max"]["p99"]
    reports = [
        FeatureReport(
            feature=f, cosine=float(cos[f]), encoder_score=float(enc[f]), rank_by_encoder=int(enc_rank[f]),
            promoted=promoted_tokens(model, loaded.sae.W_dec[f]), contexts=contexts.get(f, []),
            suppressed=suppressed_tokens(model, loaded.sae.W_dec[f]), above_null_p99=bool(cos[f] > p99),
            stats=stats.get(f, {}), persona_cosines=_persona_cosines(loaded, f, persona_vectors),
        )
        for f in order
    ]
    return {
        "layer": loaded.layer,
        "vector_norm": float(vector.norm()),
        "features": reports,
        "null": null,
        "n_above_null_p99": sum(r.above_null_p99 for r in reports),
        "top_by_encoder": [
            {"feature": int(i), "encoder_score": float(enc[i]), "cosine": float(cos[i])}
            for i in enc.argsort(descending=True)[:top].tolist()
        ],
        "n_encoder_above_null_p99": int((enc > null["encoder_score"]["max"]["p99"]).sum()),
        "most_negative_cosine": [
            {"feature": int(i), "cosine": float(cos[i])} for i in cos.argsort()[:5].tolist()
        ],
        "sparse_reconstruction": sparse_reconstruction(loaded.sae, vector, ks),
        "sparse_reconstruction_null": sparse_reconstruction_null(loaded.sae, float(vector.norm()), ks,
                                                                 seed=seed),
    }


def _interpret(
    model: HookedTransformer, loaded: LoadedSae, docs: Sequence[Document] | None, features: list[int],
    n_contexts: int, n_tokens: int | None, n_top_roles: int, seed: int,
) -> tuple[dict[int, list[Context]], dict[int, dict[str, Any]]]:
    """Contexts and activation statistics of `features` from one pass over `docs`."""
    if not docs:
        return {}, {}
    scan = scan_features(model, loaded, docs, features, n_keep=max(n_contexts * 32, n_top_roles),
                         n_tokens=n_tokens, seed=seed)
    contexts = contexts_from_scan(model, loaded, docs, scan, n_contexts) if n_contexts > 0 else {}
    return contexts, feature_stats(scan, docs, model.tokenizer, n_top_roles)


def _persona_cosines(loaded: LoadedSae, feature: int, vectors: dict[str, Tensor] | None) -> dict[str, float]:
    if not vectors:
        return {}
    row = loaded.sae.W_dec[feature].detach().float().cpu()
    return {name: float(torch.nn.functional.cosine_similarity(row, v.float().cpu(), dim=0))
            for name, v in vectors.items() if v.shape[-1] == row.shape[-1]}


def text_table(result: dict[str, Any]) -> str:
    """A plain-text report of a decomposition."""
    lines = [f"layer {result['layer']}  |v| = {result['vector_norm']:.3g}", ""]
    lines += null_lines(result)
    lines += ["", "k-sparse reconstruction (cosine with v; random directions of the same norm):"]
    nulls = {r["k"]: r for r in result.get("sparse_reconstruction_null", [])}
    for r in result["sparse_reconstruction"]:
        nr = nulls.get(r["k"])
        extra = f"  random mean={nr['mean']:.3f} p95={nr['p95']:.3f}" if nr else ""
        lines.append(f"  k={r['k']:<3d} omp={r['omp']:.3f}  top-cosine={r['top_cosine']:.3f}{extra}")
    lines += ["", f"{'rank':>4} {'feature':>7} {'cos':>6} {'>p99':>4} {'enc':>8} {'enc-rank':>8} "
              f"{'resp%':>5}  promoted tokens"]
    for i, fr in enumerate(result["features"]):
        promo = " ".join(repr(t) for t, _ in fr.promoted[:6])
        resp = f"{100 * fr.stats['response_fraction']:5.0f}" if fr.stats.get("n_top") else "    -"
        lines.append(f"{i:>4} {fr.feature:>7} {fr.cosine:>6.3f} {'yes' if fr.above_null_p99 else 'no':>4} "
                     f"{fr.encoder_score:>8.2f} {fr.rank_by_encoder:>8} {resp}  {promo}")
    for fr in result["features"]:
        if not fr.contexts:
            continue
        lines += ["", f"feature {fr.feature} (cos {fr.cosine:.3f}) top contexts:"]
        for c in fr.contexts:
            lines.append(f"  {c.activation:7.2f}  {c.text()}")
    lines += steering_lines(result)
    return "\n".join(lines) + "\n"


def null_lines(result: dict[str, Any]) -> list[str]:
    """The random-direction null of both rankings, in words."""
    null = result.get("null")
    if not null:
        return []
    d, e = null["decoder_abs_cosine"]["max"], null["encoder_score"]["max"]
    return [
        f"null: {null['n_directions']} random directions of norm {null['vector_norm']:.3g}, max over "
        f"{null['d_sae']} latents",
        f"  decoder |cos|: p50 {d['p50']:.3f}  p95 {d['p95']:.3f}  p99 {d['p99']:.3f}  -> "
        f"{result['n_above_null_p99']} of the top {len(result['features'])} above p99",
        f"  encoder score: p50 {e['p50']:.3g}  p95 {e['p95']:.3g}  p99 {e['p99']:.3g}  -> "
        f"{result['n_encoder_above_null_p99']} latents above p99",
    ]


def steering_lines(result: dict[str, Any]) -> list[str]:
    """Feature steering: mean trait score with 95 % interval, difference from no steering."""
    summary = result.get("steering_summary")
    if not summary:
        return []
    lines = ["", f"feature steering (trait score, mean [95% CI]; {summary['n_random']} random features, "
             f"their p95 = {summary['random_p95'] if summary['random_p95'] is None else round(summary['random_p95'], 1)}):"]
    for c in summary["conditions"]:
        feat = "" if c["feature"] is None else f" {c['feature']}"
        diff = c.get("diff_vs_baseline")
        dtxt = f"  diff {diff['mean']:+.1f} [{diff['ci95'][0]:+.1f}, {diff['ci95'][1]:+.1f}]" if diff else ""
        pct = f"  pct-of-random {c['random_percentile']:.0f}" if "random_percentile" in c else ""
        lines.append(f"  {c['kind']}{feat:<8} {c['mean']:.1f} [{c['ci95'][0]:.1f}, {c['ci95'][1]:.1f}]{dtxt}{pct}")
    return lines


def to_json(result: dict[str, Any]) -> str:
    """The decomposition as JSON (dataclasses flattened)."""
    def conv(o: object) -> dict[str, Any]:
        if isinstance(o, FeatureReport | Context):
            return asdict(o)
        raise TypeError(type(o))

    return json.dumps(result, default=conv, indent=2)
