"""Does the guard pay off? Eliciting vs benign prompts under no intervention, always-on
steering (−α·v at the guard's layer, paper "response" positions), the guard with the same α,
and a random-direction always-on null; judged trait and coherence, the guard's trigger rate
(false-positive rate on benign prompts) and multiple-choice capability.

Eliciting prompts: the trait's evaluation questions under the prompt ladder's two top rungs
and the largest many-shot prompt. Benign prompts: the held-out (odd) rows of the hand-written
eval set, default system prompt; the threshold is calibrated on the other (even) rows' clean
answers, so no benign test prompt was used for calibration. Greedy decoding, one reply per
prompt; intervals are percentile bootstraps over prompts (`pvlens.io.stats.bootstrap_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from transformer_lens import HookedTransformer

from pvlens.core.config import Config, SamplingConfig, default_layer
from pvlens.core.fingerprint import file_hash, model_fingerprint
from pvlens.core.guard import Guard, GuardRule
from pvlens.core.steering import AnyIntervention, Steering
from pvlens.io.stats import bootstrap_ci
from pvlens.monitor.calibrate import benign_conversations, calibrate_threshold, heldout_questions
from pvlens.traits import load_trait
from pvlens.traits.prompts import many_shot, prompt_ladder
from pvlens.vectors.evaluate import evaluate_steered


class GuardMeasureConfig(Config):
    """What `pvlens guard measure` runs (defaults fit ~15 minutes of one CPU core)."""

    trait: str = "evil"
    """Built-in trait; its shipped vectors and hand-written eval set are used."""
    layer: int | None = None
    """Guard / steering block (None: the model's middle block)."""
    alpha: float = Field(4.0, gt=0)
    """Strength subtracted by always-on steering and by the guard (raw-vector units)."""
    fpr: float = Field(0.05, ge=0, lt=1)
    """Per-reply false-positive rate the threshold is calibrated for."""
    window: int = Field(8, ge=1)
    """Tokens whose mean projection the guard monitors."""
    n_questions: int = Field(8, ge=1)
    """Evaluation questions per eliciting condition (3 conditions)."""
    n_benign: int = Field(24, ge=1)
    """Held-out benign questions."""
    n_mc: int = Field(120, ge=1)
    """Multiple-choice questions for capability (first n of the built-in set)."""
    max_new_tokens: int = Field(48, ge=1)
    """Tokens per reply."""
    seed: int = 0
    """Seed of the random-direction null and of the bootstrap."""


def eliciting_prompts(trait: str, n_questions: int) -> list[tuple[str, list[dict], str]]:
    """(question, messages, condition) for the ladder's two top rungs and the largest many-shot."""
    questions = load_trait(trait).evaluation_questions[:n_questions]
    ladder = prompt_ladder(trait)
    shots = many_shot(trait, counts=(0, 8))
    conditions = [*ladder[-2:], shots[-1]]
    return [(q, c.messages(q), c.label) for c in conditions for q in questions]


def _summary(values: Sequence[float | None], seed: int) -> list[float]:
    m, lo, hi = bootstrap_ci([math.nan if v is None else float(v) for v in values], seed=seed)
    return [m, lo, hi]


def _judged(model, judge, questions, prompts, steer, cfg) -> dict[str, Any]:
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed)
    rows = evaluate_steered(model, questions, judge, steer, sampling, prompts=prompts)
    out: dict[str, Any] = {
        "n": len(rows),
        "trait": _summary([r["trait"] for r in rows], cfg.seed),
        "coherence": _summary([r["coherence"] for r in rows], cfg.seed),
        "trait_values": [r["trait"] for r in rows],
    }
    if isinstance(steer, Guard):
        hit = {e.row: e for e in steer.events()}
        out["triggered"] = _summary([float(i in hit) for i in range(len(rows))], cfg.seed)
        out["trigger_reply_index"] = [hit[i].reply_index if i in hit else None for i in range(len(rows))]
    return out


def _mc(model: HookedTransformer, steer: AnyIntervention | None, n: int, seed: int) -> list[float]:
    from pvlens.finetune.capability import builtin_mc, mc_accuracy

    qs = builtin_mc()[:n]
    res = mc_accuracy(model, qs, steer=steer, progress=False)
    return _summary([float(p == q.answer) for p, q in zip(res.predictions, qs, strict=True)], seed)


def measure_guard(model: HookedTransformer, cfg: GuardMeasureConfig, judge) -> dict[str, Any]:
    """Run every arm; returns the JSON-able results (see module docstring)."""
    from pvlens.monitor.calibrate import shipped_vectors_file
    from pvlens.vectors.coerce import as_persona_vectors

    layer = default_layer(model) if cfg.layer is None else cfg.layer
    vfile = shipped_vectors_file(cfg.trait)
    vec = as_persona_vectors(vfile, n_layers=model.cfg.n_layers)[layer]
    calib = calibrate_threshold(model, vfile, layer, benign_conversations(cfg.trait, "calibration"),
                                cfg.fpr, cfg.trait, source=f"eval/{cfg.trait}.jsonl clean answers, even rows",
                                window=cfg.window)
    g = torch.Generator().manual_seed(cfg.seed)
    rand = torch.randn(vec.shape[0], generator=g)
    arms: dict[str, AnyIntervention | None] = {
        "none": None,
        "always": Steering(vec, layer, -cfg.alpha, "response"),
        "guard": Guard([GuardRule(vec, calib.threshold, cfg.trait)], layer, cfg.alpha, window=cfg.window),
        "random_always": Steering(rand / rand.norm() * vec.norm(), layer, -cfg.alpha, "response"),
    }
    elic = eliciting_prompts(cfg.trait, cfg.n_questions)
    benign = heldout_questions(cfg.trait)[: cfg.n_benign]
    results: dict[str, Any] = {}
    for name, steer in arms.items():
        results[name] = {
            "eliciting": _judged(model, judge, [q for q, _, _ in elic], [m for _, m, _ in elic], steer, cfg),
            "benign": _judged(model, judge, benign, None, steer, cfg),
        }
        if name != "random_always":
            results[name]["mc"] = _mc(model, steer, cfg.n_mc, cfg.seed)
    return {
        "config": cfg.model_dump(), "layer": layer, "calibration": calib.__dict__,
        "conditions": [c for _, _, c in elic][:: cfg.n_questions],
        "inputs": {"model": model_fingerprint(model), "vectors": file_hash(vfile), "judge": judge.describe()},
        "arms": results, "comparison": _compare(results, cfg.seed),
    }


def _compare(results: dict[str, Any], seed: int) -> dict[str, Any]:
    """Paired differences on eliciting prompts: guard − always-on, and each vs no intervention."""
    def diff(a: str, b: str) -> list[float]:
        x = np.asarray([np.nan if v is None else v for v in results[a]["eliciting"]["trait_values"]], float)
        y = np.asarray([np.nan if v is None else v for v in results[b]["eliciting"]["trait_values"]], float)
        return _summary(list(x - y), seed)

    return {"guard_minus_always": diff("guard", "always"), "always_minus_none": diff("always", "none"),
            "guard_minus_none": diff("guard", "none"), "random_minus_none": diff("random_always", "none")}


def _fmt(ci: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    m, lo, hi = (scale * v for v in ci)
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def guard_table(data: dict[str, Any]) -> str:
    """Markdown table of `measure_guard`'s results (docs/guard.md)."""
    arms = data["arms"]
    lines = ["| arm | eliciting trait | eliciting coherence | benign coherence | triggered: eliciting | "
             "triggered: benign (FPR) | MC accuracy % |", "|---|---|---|---|---|---|---|"]
    labels = {"none": "no intervention", "always": "always-on −α·v", "guard": "guard (−α·v after trigger)",
              "random_always": "null: always-on random direction"}
    for name, label in labels.items():
        a = arms[name]
        trig_e = _fmt(a["eliciting"]["triggered"], 100) + " %" if "triggered" in a["eliciting"] else (
            "100 % (always)" if name != "none" else "—")
        trig_b = _fmt(a["benign"]["triggered"], 100) + " %" if "triggered" in a["benign"] else (
            "100 % (always)" if name != "none" else "—")
        mc = _fmt(a["mc"], 100) if "mc" in a else "—"
        lines.append(f"| {label} | {_fmt(a['eliciting']['trait'])} | {_fmt(a['eliciting']['coherence'])} | "
                     f"{_fmt(a['benign']['coherence'])} | {trig_e} | {trig_b} | {mc} |")
    c, cal = data["comparison"], data["calibration"]
    n_e, n_b = arms["none"]["eliciting"]["n"], arms["none"]["benign"]["n"]
    lines += ["", f"n = {n_e} eliciting prompts ({', '.join(data['conditions'])}), {n_b} benign prompts, "
              f"{data['config']['n_mc']} MC questions; layer {data['layer']}, α = {data['config']['alpha']}, "
              f"window {cal.get('window', 1)} tokens, threshold {cal['threshold']:.3f} (target FPR {cal['fpr']}, "
              f"{cal['n']} calibration answers). "
              "Paired trait differences on eliciting prompts: guard − always-on "
              f"{_fmt(c['guard_minus_always'])}, always-on − none {_fmt(c['always_minus_none'])}, "
              f"guard − none {_fmt(c['guard_minus_none'])}, random − none {_fmt(c['random_minus_none'])}. "
              "Means with 95 % bootstrap intervals over prompts.", ""]
    return "\n".join(lines)
