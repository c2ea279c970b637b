"""Judges: 0-100 trait and coherence scores for (question, answer) pairs.

    judge = load_judge("offline", trait="evil")      # default: no key, no network
    judge.score_many([(question, answer), ...])      # -> [float | None, ...]
    judge.coherence_many([(question, answer), ...])
    judge.describe()                                 # for manifests

Kinds: "offline" (exemplar classifier + measured coherence), "openai" (the paper's logprob
judge), "anthropic" (parsed integer replies), "local" (the logprob method on a local model).
Every judgement is cached on disk (`JudgementCache`), so reruns are free.
"""

from __future__ import annotations

from typing import Any

from pvlens.errors import InputError
from pvlens.judges.base import Judge
from pvlens.judges.cache import Judgement, JudgementCache
from pvlens.judges.retry import RetryPolicy
from pvlens.judges.scoring import MIN_INTEGER_MASS, score_from_logprobs, weighted_score
from pvlens.traits import TraitSpec

JUDGE_KINDS = ("offline", "openai", "anthropic", "local")
DEFAULT_KIND = "offline"


def judge_class(kind: str) -> type[Judge]:
    """The Judge subclass for `kind` (imported lazily: each pulls different dependencies)."""
    if kind == "offline":
        from pvlens.judges.offline import OfflineJudge

        return OfflineJudge
    if kind == "openai":
        from pvlens.judges.api import OpenAIJudge

        return OpenAIJudge
    if kind == "anthropic":
        from pvlens.judges.api import AnthropicJudge

        return AnthropicJudge
    if kind == "local":
        from pvlens.judges.local import LocalJudge

        return LocalJudge
    raise InputError(f"unknown judge kind {kind!r}; choose one of {', '.join(JUDGE_KINDS)}")


def parse_judge_spec(text: str) -> tuple[str, dict[str, Any]]:
    """'offline' | 'local' | 'openai:MODEL' | 'anthropic:MODEL' → (kind, {'model': MODEL}).

    Checked without importing any judge, so a CLI can refuse a bad `--judge` before it loads
    a model."""
    kind, _, model = text.partition(":")
    kind = kind.strip().lower()
    if kind not in JUDGE_KINDS:
        raise InputError(
            f"unknown judge kind {kind!r} in --judge {text!r}; use one of {', '.join(JUDGE_KINDS)}, "
            "optionally with a model: openai:gpt-4.1-mini"
        )
    return kind, ({"model": model.strip()} if model.strip() else {})


def load_judge(kind: str = DEFAULT_KIND, trait: str | TraitSpec = "evil", **options: Any) -> Judge:
    """A judge of `kind` for `trait` (a TraitSpec or a built-in trait name / trait file).

    Options go to the judge's constructor, e.g. `model=`, `base_url=`, `client=`,
    `concurrency=` (API judges), `n_samples=`, `temperature=` (anthropic), `method=`
    (local), `fluency_model=` (offline), and for all: `cache=` (True: shared disk cache,
    False: none, or a JudgementCache), `rubric=`, `retry_failed=`.
    """
    if ":" in kind:  # 'openai:MODEL'
        kind, parsed = parse_judge_spec(kind)
        options = {**parsed, **options}
    return judge_class(kind)(trait, **options)


__all__ = [
    "DEFAULT_KIND",
    "JUDGE_KINDS",
    "MIN_INTEGER_MASS",
    "Judge",
    "Judgement",
    "JudgementCache",
    "RetryPolicy",
    "judge_class",
    "load_judge",
    "parse_judge_spec",
    "score_from_logprobs",
    "weighted_score",
]
