"""Compare the direction methods (mean difference, PCA of differences, logistic probe) of one
trait, all built from the same kept rollouts.

Three measurements, all non-circular (neither the hand-written sets nor the evaluation
questions made any vector):
- AUROC of the projection on the hand-written evaluation set (trait vs clean answers):
  screening-style (answer-token average) and the all-token average that stands in for
  monitoring (`validation_run.NO_PROMPT_CONTRAST`), each with a question bootstrap interval
  and the percentile in a random-direction null (pvlens.vectors.validate);
- steering dose-response at one layer: the judged trait and coherence of answers to the
  trait's evaluation questions under α·v for every method (all three rescaled to the mean
  difference's norm, so equal α is an equal push), with bootstrap intervals and the paired
  change from α = 0 (same seeds, so the α = 0 answers are shared);
- each other method against the mean difference, paired (the same questions resampled for both
  AUROCs; the same question and seed for both steered answers), so "probe beats mean" is a
  claim with its own interval rather than a reading of two overlapping ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from transformer_lens import HookedTransformer

from pvlens.core.config import Config, SamplingConfig, default_layer
from pvlens.core.fingerprint import file_hash, model_fingerprint, tensor_hash
from pvlens.core.steering import Steering
from pvlens.io.stats import bootstrap_ci
from pvlens.judges.base import Judge
from pvlens.traits import load_trait
from pvlens.vectors.directions import METHODS, method_key
from pvlens.vectors.evaluate import JudgedAnswer, evaluate_steered
from pvlens.vectors.persona import PersonaVectors
from pvlens.vectors.validate import (
    bootstrap_auroc_difference,
    load_eval_set,
    measure_set,
    pair_activations,
    random_directions,
)

OTHER_METHODS = tuple(m for m in METHODS if m != "mean")
"""The methods each compared against the mean difference."""
Score = Literal["trait", "coherence"]
"""A judge score of a JudgedAnswer."""
AUROC_REDUCTIONS = {"screening": "response_avg", "monitoring": "all_avg"}
"""Measurement name → token average of the hand-written answers projected."""


class DirectionsConfig(Config):
    """Sizes of a direction-method comparison (defaults: ≈10 min on one core, default model)."""

    layer: int | None = None
    """Block to measure and steer at (None: default_layer(model))."""
    alphas: list[float] = Field(default_factory=lambda: [0.0, 4.0, 8.0])
    """Steering strengths in units of the mean difference's norm (0 = unsteered, shared)."""
    n_questions: int = Field(20, ge=1)
    """Evaluation questions of the trait used for steering."""
    samples: int = Field(2, ge=1)
    """Sampled answers per question and α."""
    max_new_tokens: int = Field(48, ge=1)
    """Length of each steered answer."""
    n_null: int = Field(200, ge=1)
    """Random unit directions in the AUROC null."""
    n_bootstrap: int = Field(1000, ge=10)
    """Bootstrap resamples for every interval."""
    seed: int = 0
    """Sampling, null and bootstrap seed."""


def summarise(answers: list[JudgedAnswer], base: list[JudgedAnswer], cfg: DirectionsConfig) -> dict[str, Any]:
    """Mean trait/coherence with 95 % bootstrap intervals, and the paired change from α = 0."""
    out: dict[str, Any] = {"n": len(answers)}
    keys: tuple[Score, ...] = ("trait", "coherence")
    for key in keys:
        m, lo, hi = bootstrap_ci([a[key] for a in answers], cfg.n_bootstrap, cfg.seed)
        change = paired_change(answers, base, key, cfg)
        out[key] = {"mean": m, "ci95": [lo, hi], "delta": change["delta"], "delta_ci95": change["ci95"]}
    return out


def steering_curves(
    model: HookedTransformer, vecs: PersonaVectors, trait: str, judge: Judge, layer: int,
    cfg: DirectionsConfig,
) -> dict[str, dict[str, Any]]:
    """{method: {alpha: summary}} on the trait's evaluation questions."""
    questions = load_trait(trait).evaluation_questions[: cfg.n_questions]
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, batch_size=32)

    def run(steer: Steering | None) -> list[JudgedAnswer]:
        return evaluate_steered(model, questions, judge, steer, sampling, samples=cfg.samples)

    base = run(None)
    curves: dict[str, dict[str, Any]] = {}
    answers: dict[str, dict[str, list[JudgedAnswer]]] = {}
    for method in METHODS:
        v = vecs.tensors[method_key("response_avg", method)][layer]
        answers[method] = {f"{a:g}": base if a == 0 else run(Steering(v, layer, a, "response")) for a in cfg.alphas}
        curves[method] = {a: summarise(got, base, cfg) for a, got in answers[method].items()}
    for method in OTHER_METHODS:
        for a, got in answers[method].items():
            if float(a) != 0:
                curves[method][a]["trait"]["vs_mean"] = paired_change(got, answers["mean"][a], "trait", cfg)
    return curves


def paired_change(
    answers: list[JudgedAnswer], other: list[JudgedAnswer], key: Score, cfg: DirectionsConfig,
) -> dict[str, Any]:
    """Mean paired difference answers − other (same question and seed) with a bootstrap 95 % interval."""
    diffs: list[float | None] = []
    for a, b in zip(answers, other, strict=True):
        if a["question"] != b["question"]:
            raise ValueError(f"paired answers must answer the same question: {a['question']!r} vs {b['question']!r}")
        x, y = a[key], b[key]
        diffs.append(None if x is None or y is None else x - y)
    m, lo, hi = bootstrap_ci(diffs, cfg.n_bootstrap, cfg.seed)
    return {"delta": m, "ci95": [lo, hi]}


def auroc_cells(
    model: HookedTransformer, vecs: PersonaVectors, trait: str, layer: int, cfg: DirectionsConfig,
) -> dict[str, Any]:
    """{measurement: SetResult as dict} for every method's unit direction on the hand-written set."""
    acts = pair_activations(model, load_eval_set(trait), [layer], list(AUROC_REDUCTIONS.values()))
    units = {m: vecs.tensors[method_key("response_avg", m)][layer] for m in METHODS}
    units = {m: u / u.norm() for m, u in units.items()}
    dirs = random_directions(cfg.n_null, model.cfg.d_model, cfg.seed)
    out: dict[str, Any] = {}
    for name, red in AUROC_REDUCTIONS.items():
        pos, neg = acts.at(red, layer)
        result = measure_set("mean", pos, neg, units, dirs, cfg.n_bootstrap, cfg.seed).model_dump()
        result["null"].pop("aurocs")
        base_pos, base_neg = pos.double() @ units["mean"].double(), neg.double() @ units["mean"].double()
        result["vs_mean"] = {}
        for m in OTHER_METHODS:
            d, lo, hi = bootstrap_auroc_difference(pos.double() @ units[m].double(), neg.double() @ units[m].double(),
                                                   base_pos, base_neg, cfg.n_bootstrap, cfg.seed)
            result["vs_mean"][m] = {"delta": d, "ci95": [lo, hi]}
        out[name] = result
    return out


def method_cosines(vecs: PersonaVectors, layer: int) -> dict[str, float]:
    """Pairwise cosines of the three methods' directions at `layer`."""
    t = {m: vecs.tensors[method_key("response_avg", m)][layer] for m in METHODS}
    cos = torch.nn.functional.cosine_similarity
    return {f"{a}~{b}": round(float(cos(t[a], t[b], dim=0)), 4)
            for i, a in enumerate(METHODS) for b in METHODS[i + 1:]}


def compare_directions(
    model: HookedTransformer, vecs: PersonaVectors, trait: str, judge: Judge,
    cfg: DirectionsConfig | None = None, rollouts: str | Path | None = None,
) -> dict[str, Any]:
    """The whole comparison as one JSON-ready dict (inputs recorded for `check_inputs`)."""
    cfg = cfg or DirectionsConfig()
    layer = default_layer(model) if cfg.layer is None else cfg.layer
    t0 = time.time()
    aurocs = auroc_cells(model, vecs, trait, layer, cfg)
    t1 = time.time()
    curves = steering_curves(model, vecs, trait, judge, layer, cfg)
    return {
        "trait": trait, "layer": layer, "methods": list(METHODS),
        "inputs": {"model": model_fingerprint(model), "vectors": {k: tensor_hash(v) for k, v in vecs.tensors.items()},
                   "rollouts": file_hash(rollouts) if rollouts else None, "judge": judge.describe(),
                   "config": cfg.model_dump()},
        "n_pairs": vecs.metadata.get("methods", {}).get("n_pairs"),
        "cosines": method_cosines(vecs, layer), "auroc": aurocs, "steering": curves,
        "seconds": {"auroc": round(t1 - t0, 1), "steering": round(time.time() - t1, 1)},
    }
