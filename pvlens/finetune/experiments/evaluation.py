"""Evaluating one model in the experiments: judged answers (through `evaluate_steered`),
capability, and the finetuning shift against the base model's mean activations."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.steering import Intervention
from pvlens.finetune.capability import builtin_mc, mc_accuracy, perplexity
from pvlens.finetune.experiments.config import EvalConfig
from pvlens.finetune.shift import ShiftResult, mean_last_prompt, shift_between
from pvlens.judges.base import Judge
from pvlens.vectors.evaluate import evaluate_steered, mean_score

Steer = Intervention | Sequence[Intervention] | None
"""No steer, one intervention, or several."""


def score_or_none(value: float) -> float | None:
    """A mean score for a JSON record: None when no answer had a score (NaN)."""
    return None if math.isnan(value) else value


@dataclass
class TraitProbe:
    """What evaluating one trait needs: questions, judge, unit vectors and the base model's mean."""

    questions: list[str]
    """Evaluation questions of the trait."""
    judge: Judge
    """Judge of the trait."""
    units: Float[Tensor, "n_layers d_model"]
    """Unit persona vectors, one per layer."""
    base_mean: Float[Tensor, "n_layers d_model"] | None = None
    """Mean last-prompt activation of the base model (None: the model evaluated is the base)."""

    def shift(self, model: HookedTransformer, steer: Steer = None) -> ShiftResult:
        """Finetuning shift per layer of `model` (as deployed, with `steer`) against the base."""
        mean = mean_last_prompt(model, self.questions, steer=steer)
        base = mean if self.base_mean is None else self.base_mean
        return shift_between(mean, base, self.units, list(range(len(self.units))))

    def judged(self, model: HookedTransformer, cfg: EvalConfig, steer: Steer = None) -> dict[str, Any]:
        """Trait score, coherence and every judged answer."""
        answers = evaluate_steered(model, self.questions, self.judge, steer=steer, sampling=cfg.sampling,
                                   samples=cfg.samples)
        return {"trait": score_or_none(mean_score(answers, "trait")),
                "coherence": score_or_none(mean_score(answers, "coherence")), "answers": answers}


def capability(model: HookedTransformer, cfg: EvalConfig, steer: Steer = None) -> dict[str, Any]:
    """Built-in multiple-choice accuracy and held-out perplexity (each optional in `cfg`)."""
    mc = mc_accuracy(model, builtin_mc()[: cfg.mc_limit], steer=steer, progress=False) \
        if cfg.mc_limit != 0 else None
    return {"mc_accuracy": mc.accuracy if mc else None, "mc_chance": mc.chance if mc else None,
            "mc_n": mc.n if mc else 0,
            "perplexity": perplexity(model, steer=steer) if cfg.perplexity else None}


def evaluate_model(
    model: HookedTransformer, probe: TraitProbe, cfg: EvalConfig, steer: Steer = None,
) -> dict[str, Any]:
    """Trait score, coherence, MC accuracy, perplexity and the per-layer shift of one arm."""
    t0 = time.perf_counter()
    judged = probe.judged(model, cfg, steer)
    shift = probe.shift(model, steer)
    return {
        "trait": judged["trait"], "coherence": judged["coherence"], **capability(model, cfg, steer),
        "shift_by_layer": shift.projection.tolist(),
        "projection_by_layer": shift.finetuned_projection.tolist(),
        "answers": judged["answers"],
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }


def evaluate_trait(model: HookedTransformer, probe: TraitProbe, cfg: EvalConfig, layer: int) -> dict[str, Any]:
    """Trait score, coherence and shift only (no capability)."""
    judged = probe.judged(model, cfg)
    shift = probe.shift(model).projection.tolist()
    return {"trait_score": judged["trait"], "coherence": judged["coherence"], "shift": shift[layer],
            "shift_by_layer": shift}


def cached_mean(
    path: Path, model: HookedTransformer, questions: Sequence[str],
) -> Float[Tensor, "n_layers d_model"]:
    """`mean_last_prompt(model, questions)`, computed once and kept in `path` (safetensors,
    written by rename so a kill never leaves half a file)."""
    if path.exists():
        return load_file(str(path))["mean"]
    mean = mean_last_prompt(model, questions)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"mean": mean.contiguous()}, str(tmp))
    tmp.replace(path)
    return mean


def load_questions(trait: str, n: int | None, questions: Sequence[str] | None = None) -> list[str]:
    """The first `n` of `questions`, or of the trait's evaluation questions."""
    if questions is None:
        from pvlens.traits import load_trait

        questions = list(load_trait(trait).evaluation_questions)
    questions = list(questions)[:n] if n else list(questions)
    if not questions:
        raise ValueError(f"no evaluation questions for {trait!r}")
    return questions


def load_trait_judge(trait: str, judge: Judge | None = None, judge_kind: str = "offline") -> Judge:
    """`judge`, or a new judge of `judge_kind` for `trait`."""
    if judge is not None:
        return judge
    from pvlens.judges import load_judge

    return load_judge(judge_kind, trait=trait)
