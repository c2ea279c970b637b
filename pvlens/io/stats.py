"""Uncertainty for reported numbers: a seeded percentile bootstrap of the mean, and a
Student-t interval for a handful of per-seed values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def finite_values(values: Sequence[float | None]) -> np.ndarray:
    """`values` as a float array without None and NaN."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[~np.isnan(x)]


def bootstrap_ci(
    values: Sequence[float | None], n: int = 2000, seed: int = 0, level: float = 0.95,
) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of `values` and its percentile bootstrap interval.

    `n` resamples (with replacement, same size as `values`) from a generator seeded with
    `seed`, so the interval is reproducible. NaNs are dropped; no values gives three NaNs,
    one value a zero-width interval.
    """
    x = finite_values(values)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if n < 1:
        raise ValueError(f"bootstrap needs at least one resample, got n={n}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(x.mean()), float(lo), float(hi)


def t_interval(values: Sequence[float | None], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): mean ± t·s/√k over `k` values (e.g. one per seed; honest for small k,
    where a bootstrap of 3 values is far too narrow). One value: a zero-width interval."""
    x = finite_values(values)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2.0, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half
