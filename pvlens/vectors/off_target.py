"""Off-target matrix: steer along one trait's vector, judge every built-in trait and capability.

For each steered trait A (and an unsteered row), the model answers one fixed mixed question
set (the first questions of each steered trait's evaluation questions); every built-in trait's
offline judge scores the same answers, and the paired change from the unsteered answers (same
seeds) gets a bootstrap interval. Capability under the same steer: multiple-choice accuracy on
pvlens's built-in set (bootstrap interval over questions) and perplexity of the built-in
held-out prose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field
from transformer_lens import HookedTransformer

from pvlens.core.config import Config, SamplingConfig, default_layer
from pvlens.core.fingerprint import model_fingerprint, tensor_hash
from pvlens.core.steering import Steering
from pvlens.finetune.capability import builtin_mc, mc_accuracy, perplexity
from pvlens.io.stats import bootstrap_ci
from pvlens.judges import load_judge
from pvlens.judges.base import Judge
from pvlens.traits import builtin_traits, load_trait
from pvlens.vectors.coerce import as_persona_vectors
from pvlens.vectors.evaluate import evaluate_steered

MAIN_TRAITS = ("evil", "sycophantic", "hallucinating")


class OffTargetConfig(Config):
    """Sizes of an off-target run (defaults: ≈15 min on one core with the default model)."""

    steered: list[str] = Field(default_factory=lambda: list(MAIN_TRAITS))
    """Traits whose (shipped or given) vectors are steered along, one row each."""
    alpha: float = 8.0
    """Strength in raw-vector units (the shipped evil sweep's choice at the default layer)."""
    layer: int | None = None
    """Block to steer (None: default_layer(model))."""
    questions_per_trait: int = Field(8, ge=1)
    """First N evaluation questions of each steered trait, pooled into one question set."""
    samples: int = Field(1, ge=1)
    """Sampled answers per question."""
    max_new_tokens: int = Field(48, ge=1)
    """Answer length."""
    mc_questions: int | None = Field(None, ge=1)
    """First N built-in multiple-choice questions (None: all 254)."""
    n_bootstrap: int = Field(1000, ge=10)
    """Bootstrap resamples for every interval."""
    seed: int = 0
    """Sampling and bootstrap seed."""


JudgeFor = Callable[[str], Judge]
"""Trait name → its judge (default: the offline judge)."""


def offline_judge(trait: str) -> Judge:
    return load_judge("offline", trait=trait)


def judged_scores(pairs: Sequence[tuple[str, str]], traits: Sequence[str], judge_for: JudgeFor = offline_judge,
                  ) -> dict[str, list[float | None]]:
    """Every trait's judge score of each (question, answer), plus coherence."""
    scores: dict[str, list[float | None]] = {t: judge_for(t).score_many(pairs) for t in traits}
    scores["coherence"] = judge_for(traits[0]).coherence_many(pairs)
    return scores


def score_cells(scores: dict[str, list], base: dict[str, list], cfg: OffTargetConfig) -> dict[str, Any]:
    """Per judged trait: mean with interval and the paired change from unsteered, with interval."""
    cells = {}
    for trait, values in scores.items():
        m, lo, hi = bootstrap_ci(values, cfg.n_bootstrap, cfg.seed)
        diffs = [None if a is None or b is None else a - b for a, b in zip(values, base[trait], strict=True)]
        d, dlo, dhi = bootstrap_ci(diffs, cfg.n_bootstrap, cfg.seed)
        cells[trait] = {"mean": m, "ci95": [lo, hi], "delta": d, "delta_ci95": [dlo, dhi]}
    return cells


def capability(model: HookedTransformer, steer: Steering | None, cfg: OffTargetConfig) -> dict[str, Any]:
    """MC accuracy (interval over questions) and held-out perplexity under `steer`."""
    questions = builtin_mc()[: cfg.mc_questions] if cfg.mc_questions else builtin_mc()
    mc = mc_accuracy(model, questions, steer=steer, progress=False)
    right = [float(p == q.answer) for p, q in zip(mc.predictions, questions, strict=True)]
    acc, lo, hi = bootstrap_ci(right, cfg.n_bootstrap, cfg.seed)
    return {"mc_accuracy": acc, "mc_ci95": [lo, hi], "mc_n": mc.n, "mc_chance": mc.chance,
            "perplexity": perplexity(model, steer=steer)}


def off_target(model: HookedTransformer, cfg: OffTargetConfig | None = None,
               vectors: dict[str, Any] | None = None, judge_for: JudgeFor = offline_judge,
               judged: Sequence[str] | None = None) -> dict[str, Any]:
    """The matrix as one JSON-ready dict: rows = steered trait ('none' first), columns = judged
    traits (default: every built-in trait)."""
    cfg = cfg or OffTargetConfig()
    layer = default_layer(model) if cfg.layer is None else cfg.layer
    vecs = {t: as_persona_vectors((vectors or {}).get(t, t)) for t in cfg.steered}
    questions = [q for t in cfg.steered for q in load_trait(t).evaluation_questions[: cfg.questions_per_trait]]
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, batch_size=32)
    judged = list(judged or builtin_traits())
    rows: dict[str, Any] = {}
    base: dict[str, list] = {}
    t0 = time.time()
    for name in ["none", *cfg.steered]:
        steer = None if name == "none" else Steering(vecs[name][layer], layer, cfg.alpha, "response")
        answers = evaluate_steered(model, questions, judge_for(judged[0]), steer, sampling, samples=cfg.samples)
        scores = judged_scores([(a["question"], a["answer"]) for a in answers], judged, judge_for)
        base = base or scores
        rows[name] = {"judged": score_cells(scores, base, cfg), "capability": capability(model, steer, cfg),
                      "example": answers[0]["answer"]}
    return {
        "layer": layer, "alpha": cfg.alpha, "judged_traits": judged, "n_answers": len(questions) * cfg.samples,
        "inputs": {"model": model_fingerprint(model), "config": cfg.model_dump(),
                   "judges": {t: judge_for(t).describe() for t in judged},
                   "vectors": {t: tensor_hash(v.vectors) for t, v in vecs.items()}},
        "rows": rows, "seconds": round(time.time() - t0, 1),
    }
