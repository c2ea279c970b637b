"""The Judge interface: trait and coherence scores (0-100) for (question, answer) pairs.

Every judge shares the caching logic here; a subclass only says how to judge pairs that are
not cached (`_judge_uncached`). Results are written to the cache as they arrive, so a long run
that is interrupted resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pvlens.judges.cache import Judgement, JudgementCache, NullCache, judgement_key
from pvlens.traits import TraitSpec, coherence_rubric, load_trait

log = logging.getLogger("pvlens.judges")

Aspect = Literal["trait", "coherence"]
Pair = tuple[str, str]


def text_hash(text: str) -> str:
    """Short sha256 of a rubric (or any text), written into manifests and cache keys."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """Validate `pairs` as (question, answer) string tuples, with an error that says which."""
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"pairs[{i}] must be a (question, answer) tuple, got {pair!r:.80}")
        q, a = pair
        if not isinstance(q, str) or not isinstance(a, str):
            raise TypeError(
                f"pairs[{i}] must hold two strings, got ({type(q).__name__}, {type(a).__name__})"
            )
        out.append((q, a))
    return out


@dataclass
class PendingBatch:
    """Pairs a judge must judge (not in the cache), and where each result goes."""

    aspect: Aspect
    """'trait' or 'coherence'."""
    pairs: list[Pair]
    """(question, answer) pairs, indexed as `store` expects."""
    store: Callable[[int, Judgement], None]
    """`store(i, judgement)` records the judgement of `pairs[i]` (thread-safe)."""
    progress: bool
    """Show a progress bar."""

    def progress_bar(self, kind: str) -> Any:
        """A tqdm bar over the pairs, or None without progress."""
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=len(self.pairs), desc=f"{kind} judge ({self.aspect})")


class Judge(ABC):
    """Scores answers for one trait (0-100) and for coherence (0-100); None = no score."""

    kind: str = "base"

    def __init__(
        self,
        trait: str | TraitSpec,
        *,
        cache: JudgementCache | bool | None = True,
        rubric: str | None = None,
        coherence_rubric_text: str | None = None,
        retry_failed: bool = True,
    ):
        """
        Args:
            trait: a TraitSpec, a built-in trait name, or a trait file path.
            cache: True for the shared disk cache, False/None for none, or a JudgementCache.
            rubric: override of the trait's rubric ({question} and {answer} slots).
            coherence_rubric_text: override of the built-in coherence rubric.
            retry_failed: re-judge pairs whose cached call failed (scores are never redone).
        """
        self.trait = load_trait(trait)
        self.rubric = rubric if rubric is not None else self.trait.rubric
        self.coherence_rubric = (
            coherence_rubric_text if coherence_rubric_text is not None else coherence_rubric()
        )
        for name, text in (("rubric", self.rubric), ("coherence rubric", self.coherence_rubric)):
            missing = [s for s in ("{question}", "{answer}") if s not in text]
            if missing:
                raise ValueError(f"the {name} lacks the slots {missing}; add them to the text")
        if cache is True:
            cache = JudgementCache.default()
        self.cache = cache if isinstance(cache, JudgementCache) else NullCache()
        self.retry_failed = retry_failed

    # --- what identifies this judge ------------------------------------------------------
    @property
    @abstractmethod
    def model(self) -> str:
        """The judging model's name."""

    def settings(self) -> dict[str, Any]:
        """Options that change scores (part of the cache key and the manifest)."""
        return {}

    def rubric_hash(self, aspect: Aspect) -> str:
        """Hash of what defines the scale for `aspect` (the rubric text, by default)."""
        return text_hash(self.rubric if aspect == "trait" else self.coherence_rubric)

    def prompt(self, aspect: Aspect, question: str, answer: str) -> str:
        """The rubric for `aspect` filled in (str.replace: other braces in it are safe)."""
        template = self.rubric if aspect == "trait" else self.coherence_rubric
        return template.replace("{question}", question).replace("{answer}", answer)

    def describe(self) -> dict[str, Any]:
        """What a manifest records about this judge."""
        return {
            "kind": self.kind,
            "model": self.model,
            "trait": self.trait.name,
            "rubric_hash": self.rubric_hash("trait"),
            "coherence_rubric_hash": self.rubric_hash("coherence"),
            "settings": self.settings(),
            "endpoint": self.endpoint(),
        }

    # --- scoring -------------------------------------------------------------------------
    def score_many(self, pairs: Sequence[Pair], progress: bool = False) -> list[float | None]:
        """Trait scores 0-100 (None = no score) for (question, answer) pairs."""
        return [j.score for j in self.judge_many(pairs, "trait", progress)]

    def coherence_many(self, pairs: Sequence[Pair], progress: bool = False) -> list[float | None]:
        """Coherence scores 0-100 (None = no score) for (question, answer) pairs."""
        return [j.score for j in self.judge_many(pairs, "coherence", progress)]

    def score(self, question: str, answer: str) -> float | None:
        return self.score_many([(question, answer)])[0]

    def coherence(self, question: str, answer: str) -> float | None:
        return self.coherence_many([(question, answer)])[0]

    def endpoint(self) -> str | None:
        """Where judgements come from (an API base URL); None for in-process judges."""
        return None

    def cache_key(self, aspect: Aspect, question: str, answer: str) -> str:
        """The cache key of one judgement: kind, model, endpoint, rubric, settings, pair."""
        settings = {**self.settings(), "aspect": aspect}
        endpoint = self.endpoint()
        if endpoint is not None:  # in-process judges keep the keys they always had
            settings["endpoint"] = endpoint
        return judgement_key(self.kind, self.model, self.rubric_hash(aspect), settings, question, answer)

    def judge_many(
        self, pairs: Sequence[Pair], aspect: Aspect = "trait", progress: bool = False
    ) -> list[Judgement]:
        """Full judgements (score, error, detail), served from the cache where possible."""
        if aspect not in ("trait", "coherence"):
            raise ValueError(f"aspect must be 'trait' or 'coherence', got {aspect!r}")
        pairs = check_pairs(pairs)
        keys = [self.cache_key(aspect, q, a) for q, a in pairs]
        results: dict[str, Judgement] = {
            k: j for k, j in self.cache.get_many(keys).items() if not (j.failed and self.retry_failed)
        }
        todo = {k: p for k, p in zip(keys, pairs, strict=True) if k not in results}
        if todo:
            log.info("%s judge: %d of %d pairs not cached", self.kind, len(todo), len(pairs))
            self._judge_todo(aspect, todo, results, progress)
        return [results[k] for k in keys]

    def _judge_todo(
        self, aspect: Aspect, todo: dict[str, Pair], results: dict[str, Judgement], progress: bool
    ) -> None:
        """Judge the uncached pairs, storing each result in `results` and the cache."""
        todo_keys = list(todo)
        rubric_hash = self.rubric_hash(aspect)

        def store(index: int, judgement: Judgement) -> None:
            key = todo_keys[index]
            q, a = todo[key]
            results[key] = judgement
            if judgement.failed:
                log.warning("%s judge call failed: %s", self.kind, judgement.error)
            self.cache.put(key, judgement, kind=self.kind, model=self.model,
                           rubric_hash=rubric_hash, question=q, answer=a)

        self._judge_uncached(PendingBatch(aspect, [todo[k] for k in todo_keys], store, progress))
        missing = [k for k in todo_keys if k not in results]
        if missing:
            raise RuntimeError(f"{type(self).__name__} returned no result for {len(missing)} pairs")

    @abstractmethod
    def _judge_uncached(self, batch: PendingBatch) -> None:
        """Judge `batch.pairs` and call `batch.store(i, judgement)` for each (in any order, from
        any thread)."""
