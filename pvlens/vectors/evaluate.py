"""The one evaluation path: generate under an intervention, judge, and summarise.

Sweeps, the finetuning experiments, prompt shift, feature steering and dataset building all
ask the same question — "what does the model say under this steer, and how does the judge
score it?" — so they all call `evaluate_steered`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypedDict

from transformer_lens import HookedTransformer

from pvlens.core.bulk import bulk_generate
from pvlens.core.config import SamplingConfig
from pvlens.core.generation import PromptLike
from pvlens.core.steering import AnyIntervention
from pvlens.judges.base import Judge


class JudgedAnswer(TypedDict):
    """One generated answer with its judge scores (None = the judge gave no score)."""

    question: str
    answer: str
    trait: float | None
    coherence: float | None


def evaluate_steered(
    model: HookedTransformer,
    questions: Sequence[str],
    judge: Judge,
    steer: AnyIntervention | Sequence[AnyIntervention] | None = None,
    sampling: SamplingConfig | None = None,
    samples: int = 1,
    system: str | None = None,
    prompts: Sequence[PromptLike] | None = None,
    progress: bool = False,
) -> list[JudgedAnswer]:
    """`samples` answers per question under `steer`, each scored for the trait and coherence.

    `prompts` (same length as `questions`) overrides what the model is shown — e.g. chat
    messages with a system prompt — while the judge still sees the bare question.
    """
    sampling = sampling or SamplingConfig()
    if prompts is not None and len(prompts) != len(questions):
        raise ValueError(f"{len(prompts)} prompts for {len(questions)} questions")
    shown = list(prompts) if prompts is not None else list(questions)
    rows = [(q, p) for q, p in zip(questions, shown, strict=True) for _ in range(samples)]
    texts = bulk_generate(
        model, [p for _, p in rows], sampling, system=system, steer=steer,
        batch_size=sampling.batch_size, progress=progress,
    ).texts
    pairs = [(q, a) for (q, _), a in zip(rows, texts, strict=True)]
    traits = judge.score_many(pairs)
    coherences = judge.coherence_many(pairs)
    return [
        JudgedAnswer(question=q, answer=a, trait=t, coherence=c)
        for (q, a), t, c in zip(pairs, traits, coherences, strict=True)
    ]


def mean_score(answers: Sequence[JudgedAnswer], key: Literal["trait", "coherence"] = "trait") -> float:
    """Mean of the scores that exist; NaN when none does (never a silent 0)."""
    values = [v for a in answers if (v := a[key]) is not None]
    return sum(values) / len(values) if values else math.nan
