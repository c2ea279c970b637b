"""Steering with single SAE features: does a feature's decoder direction reproduce a facet of
the trait? Every condition goes through the one evaluation path, `evaluate_steered`."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.config import SamplingConfig
from pvlens.core.steering import Steering
from pvlens.io.stats import bootstrap_ci
from pvlens.judges.base import Judge
from pvlens.sae.loading import LoadedSae
from pvlens.vectors.evaluate import evaluate_steered, mean_score


def default_judge(trait: str) -> Judge:
    """pvlens's offline judge for `trait`."""
    from pvlens.judges import load_judge

    return load_judge("offline", trait=trait)


def steering_conditions(
    loaded: LoadedSae, vector: Float[Tensor, " d_model"], features: Sequence[int], n_random: int, seed: int,
) -> list[tuple[str, int | None, Tensor | None]]:
    """(kind, feature, direction): baseline, the persona vector, each feature's unit decoder
    direction times ‖vector‖, and `n_random` random features (not in `features`) as controls."""
    norm = vector.float().norm()
    W = loaded.sae.W_dec.detach().float().cpu()
    excluded = set(features)
    pool = [i for i in range(W.shape[0]) if i not in excluded]
    controls = random.Random(seed).sample(pool, min(n_random, len(pool)))
    conditions: list[tuple[str, int | None, Tensor | None]] = [
        ("baseline", None, None), ("persona_vector", None, vector.float())]
    conditions += [("feature", int(f), W[f] / W[f].norm() * norm) for f in features]
    conditions += [("random_feature", int(f), W[f] / W[f].norm() * norm) for f in controls]
    return conditions


def _finite_or_none(x: float) -> float | None:
    return None if x != x else x


def feature_steering(
    model: HookedTransformer,
    loaded: LoadedSae,
    vector: Float[Tensor, " d_model"],
    features: Sequence[int],
    questions: Sequence[str],
    judge: Judge,
    alpha: float = 1.0,
    n_random: int = 20,
    positions: str = "response",
    max_new_tokens: int = 64,
    seed: int = 0,
    samples: int = 1,
    temperature: float = 0.0,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Mean judge scores of replies steered with each feature vs controls.

    Every condition adds `alpha * d` at the SAE's layer (see `steering_conditions`). Each
    condition answers every question `samples` times (sampling with `temperature`, the same
    seeds in every condition) and reports the mean trait score and coherence (None when the
    judge gave none).
    """
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                              batch_size=batch_size)
    rows = []
    for kind, feat, direction in steering_conditions(loaded, vector, features, n_random, seed):
        steer = None if direction is None else Steering(direction, loaded.layer, alpha, positions)
        with torch.no_grad():
            answers = evaluate_steered(model, questions, judge, steer=steer, sampling=sampling, samples=samples)
        rows.append({"kind": kind, "feature": feat, "alpha": alpha,
                     "trait_score": _finite_or_none(mean_score(answers, "trait")),
                     "coherence": _finite_or_none(mean_score(answers, "coherence")), "n": len(answers),
                     "scores": [a["trait"] for a in answers],
                     "example": answers[0]["answer"][:300] if answers else ""})
    return rows


def steering_summary(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Intervals and the random-feature null for `feature_steering` rows.

    Every condition answers the same questions with the same seeds, so a feature's effect is
    the mean of paired per-reply differences from the baseline, with a bootstrap interval (the
    SE of a difference, not of one mean). The null is the distribution of the random features'
    mean scores: each steered feature's percentile in it, and its 95th percentile.
    """
    base = next((r for r in rows if r["kind"] == "baseline"), None)
    randoms = np.array([r["trait_score"] for r in rows if r["kind"] == "random_feature"
                        and r["trait_score"] is not None], dtype=float)
    out: dict[str, Any] = {"conditions": [], "n_random": int(len(randoms)),
                           "random_p95": float(np.percentile(randoms, 95)) if len(randoms) else None}
    for r in rows:
        mean, lo, hi = bootstrap_ci(r["scores"], seed=seed)
        entry = {"kind": r["kind"], "feature": r["feature"], "mean": mean, "ci95": [lo, hi], "n": r["n"]}
        if base is not None and r is not base and len(r["scores"]) == len(base["scores"]):
            diffs = [None if a is None or b is None else a - b for a, b in zip(r["scores"], base["scores"], strict=True)]
            d, dlo, dhi = bootstrap_ci(diffs, seed=seed)
            entry["diff_vs_baseline"] = {"mean": d, "ci95": [dlo, dhi]}
        if len(randoms) and r["kind"] == "feature" and r["trait_score"] is not None:
            entry["random_percentile"] = float((randoms < r["trait_score"]).mean() * 100)
            entry["beats_random_p95"] = bool(r["trait_score"] > out["random_p95"])
        out["conditions"].append(entry)
    return out
