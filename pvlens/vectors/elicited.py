"""Prompt-elicited evaluation sets: the model's own answers under the trait's system prompts,
with no steering, judged and filtered.

For each of a trait's *evaluation* questions (disjoint from the extraction questions the vectors
were made from) and each of its first few instruction pairs, the model answers once under the
trait-eliciting (pos) and once under the trait-suppressing (neg) system prompt. The judge scores
every answer; a pos answer passes with trait ≥ threshold, a neg answer with trait < threshold,
both needing coherence ≥ threshold. The pass rates are reported.

Two measurements come out of such a set (see `elicited_groups`):
- answers: the residual averaged over a passing answer's tokens, read in a plain chat (user
  question, answer — no system prompt, as a training sample would be), pos vs neg;
- prompts: the last prompt token of (system prompt, question), pos vs neg — the paper's
  monitoring contrast, on every prompt, whatever its answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.core.chat import encode_conversation, encode_prompt
from pvlens.core.config import Config, SamplingConfig
from pvlens.core.fingerprint import json_hash, model_fingerprint
from pvlens.io.atomic import read_json_checked, write_json_atomic
from pvlens.io.runs import check_inputs, run_lock
from pvlens.judges.base import Judge
from pvlens.traits import TraitSpec
from pvlens.vectors.evaluate import evaluate_steered
from pvlens.vectors.validate import GroupedActivations


class ElicitConfig(Config):
    """How a prompt-elicited set is generated and filtered."""

    instructions: int = Field(3, ge=1)
    """Instruction pairs used (the first n of the trait's)."""
    samples: int = Field(1, ge=1)
    """Answers per (question, instruction, polarity)."""
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, temperature=1.0, batch_size=32)
    )
    """Sampling of the answers (the paper samples at temperature 1)."""
    trait_threshold: float = 50.0
    """A pos answer passes with trait ≥ this, a neg answer with trait < this."""
    coherence_threshold: float = 50.0
    """Both polarities need coherence ≥ this."""


class ElicitedAnswer(BaseModel):
    """One answer of the model under a pos or neg system prompt, with its scores."""

    polarity: str
    instruction: int
    question_index: int
    question: str
    system: str
    answer: str
    trait: float | None
    coherence: float | None
    passed: bool


class ElicitedSet(BaseModel):
    """A trait's prompt-elicited answers and its pass rates."""

    trait: str
    answers: list[ElicitedAnswer]
    pass_rate_pos: float
    pass_rate_neg: float


def passes(polarity: str, trait: float | None, coherence: float | None, cfg: ElicitConfig) -> bool:
    """The filter: the trait on the right side of the threshold and a coherent answer."""
    if trait is None or coherence is None or coherence < cfg.coherence_threshold:
        return False
    return trait >= cfg.trait_threshold if polarity == "pos" else trait < cfg.trait_threshold


def elicit(model: HookedTransformer, spec: TraitSpec, judge: Judge, cfg: ElicitConfig | None = None) -> ElicitedSet:
    """Generate, judge and filter the trait's prompt-elicited set (no steering)."""
    cfg = cfg or ElicitConfig()
    plan = [(pol, i, q) for i in range(min(cfg.instructions, len(spec.instructions)))
            for q in range(len(spec.evaluation_questions)) for pol in ("pos", "neg")]
    questions = [spec.evaluation_questions[q] for _, _, q in plan]
    prompts = [encode_prompt(model.tokenizer, spec.evaluation_questions[q], spec.system_prompt(pol, i))
               for pol, i, q in plan]
    judged = evaluate_steered(model, questions, judge, sampling=cfg.sampling, samples=cfg.samples, prompts=prompts)
    rows = [p for p in plan for _ in range(cfg.samples)]
    answers = [
        ElicitedAnswer(polarity=pol, instruction=i, question_index=q, question=a["question"],
                       system=spec.system_prompt(pol, i), answer=a["answer"], trait=a["trait"],
                       coherence=a["coherence"], passed=passes(pol, a["trait"], a["coherence"], cfg))
        for (pol, i, q), a in zip(rows, judged, strict=True)
    ]
    return ElicitedSet(trait=spec.name, answers=answers, pass_rate_pos=_pass_rate(answers, "pos"),
                       pass_rate_neg=_pass_rate(answers, "neg"))


def _pass_rate(answers: Sequence[ElicitedAnswer], polarity: str) -> float:
    mine = [a for a in answers if a.polarity == polarity]
    return sum(a.passed for a in mine) / len(mine) if mine else 0.0


def elicited_groups(
    model: HookedTransformer, elicited: ElicitedSet, layers: Sequence[int], batch_size: int = 16
) -> dict[str, GroupedActivations]:
    """{"answers": passing answers' response_avg, "prompts": every prompt's last token}, pos vs
    neg, grouped by question (for the bootstrap), for all `layers` in two passes."""
    tok = model.tokenizer
    kept = [a for a in elicited.answers if a.passed and a.answer.strip()]
    chats = [encode_conversation(tok, [{"role": "user", "content": a.question},
                                       {"role": "assistant", "content": a.answer}]) for a in kept]
    out: dict[str, GroupedActivations] = {}
    if kept:
        acts = collect(model, chats, reductions=["response_avg"], layers=list(layers),
                       batch_size=batch_size, progress=False)["response_avg"]
        out["answers"] = _split(acts, kept, layers)
    seen = {(a.polarity, a.instruction, a.question_index): a for a in elicited.answers}
    unique = list(seen.values())
    prompts = [encode_prompt(tok, a.question, a.system) for a in unique]
    acts = collect(model, prompts, reductions=["last_prompt"], layers=list(layers),
                   batch_size=batch_size, progress=False)["last_prompt"]
    out["prompts"] = _split(acts, unique, layers)
    return out


def _split(acts: torch.Tensor, rows: Sequence[ElicitedAnswer], layers: Sequence[int]) -> GroupedActivations:
    pos = [j for j, a in enumerate(rows) if a.polarity == "pos"]
    neg = [j for j, a in enumerate(rows) if a.polarity == "neg"]
    return GroupedActivations(
        layers=[int(x) for x in layers], pos=acts[pos], neg=acts[neg],
        pos_groups=[rows[j].question_index for j in pos], neg_groups=[rows[j].question_index for j in neg],
    )


def elicit_inputs(model: HookedTransformer, spec: TraitSpec, judge: Judge, cfg: ElicitConfig) -> dict[str, object]:
    """Everything that determines an elicited set (the key of its cache folder)."""
    return {"model": model_fingerprint(model), "trait": json_hash(spec.model_dump()),
            "config": cfg.model_dump(), "judge": judge.describe()}


def load_or_elicit(
    model: HookedTransformer, spec: TraitSpec, judge: Judge, folder: str | Path,
    cfg: ElicitConfig | None = None, overwrite: bool = False,
) -> ElicitedSet:
    """The elicited set cached in `folder/answers.json`, made once per inputs (model, trait spec,
    config, judge); a folder made with other inputs is refused unless `overwrite`."""
    cfg = cfg or ElicitConfig()
    folder = Path(folder)
    with run_lock(folder):
        check_inputs(folder, elicit_inputs(model, spec, judge, cfg), overwrite=overwrite)
        path = folder / "answers.json"
        if path.exists():
            return ElicitedSet.model_validate(read_json_checked(path))
        result = elicit(model, spec, judge, cfg)
        write_json_atomic(path, result.model_dump(mode="json"))
        return result
