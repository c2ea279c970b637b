"""Turning a judge model's output into a 0-100 score (pure functions, no I/O).

The paper's rule (Chen et al. 2025, public code): from the top-20 next-token log-probabilities,
keep tokens that are integers 0-100, take the probability-weighted mean of their values, and
give no score when those tokens hold less than 0.25 of the probability mass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

MIN_INTEGER_MASS = 0.25
"""Below this total probability on integer tokens the paper returns no score."""

_INT = re.compile(r"^\s*(\d{1,3})\s*$")
_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def token_integer(token: str) -> int | None:
    """The integer 0-100 a token stands for ("42", " 7"), else None ("4.5", "-3", "101", "a")."""
    m = _INT.match(token)
    if m is None:
        return None
    value = int(m.group(1))
    return value if 0 <= value <= 100 else None


def integer_distribution(token_probs: Iterable[tuple[str, float]]) -> dict[int, float]:
    """Probability per integer 0-100, summing tokens that mean the same number ("7", " 7")."""
    dist: dict[int, float] = {}
    for token, prob in token_probs:
        value = token_integer(token)
        if value is not None:
            dist[value] = dist.get(value, 0.0) + float(prob)
    return dist


def weighted_score(
    dist: Mapping[int, float], min_mass: float = MIN_INTEGER_MASS
) -> tuple[float | None, float]:
    """(probability-weighted mean of the integers or None, their total mass).

    None when the mass is below `min_mass` (the paper's 0.25): the judge was not answering with
    a number (e.g. it said REFUSAL), so no score is better than a guess.
    """
    mass = float(sum(dist.values()))
    if mass <= 0.0 or mass < min_mass:
        return None, mass
    return float(sum(v * p for v, p in dist.items()) / mass), mass


def score_from_logprobs(
    top_logprobs: Iterable[tuple[str, float]], min_mass: float = MIN_INTEGER_MASS
) -> tuple[float | None, float]:
    """The paper's aggregation over (token, logprob) pairs: (score or None, integer mass)."""
    return weighted_score(
        integer_distribution((t, math.exp(lp)) for t, lp in top_logprobs), min_mass
    )


def parse_integer_reply(text: str) -> int | None:
    """The score in a text reply ("73", "Score: 73", "73/100"), or None (REFUSAL, 150, none).

    Only the first number counts, and it must be a whole number 0-100.
    """
    m = _FIRST_NUMBER.search(text)
    if m is None:
        return None
    raw = m.group(0)
    if "." in raw or raw.startswith("-"):
        return None
    value = int(raw)
    return value if 0 <= value <= 100 else None
