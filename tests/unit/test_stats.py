"""pvlens.io.stats: the seeded bootstrap interval and the t interval across seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pvlens.io.stats import bootstrap_ci, t_interval


def test_bootstrap_ci_is_seeded_and_matches_normal_theory():
    x = np.random.default_rng(1).normal(10.0, 2.0, size=400)
    mean, lo, hi = bootstrap_ci(x, n=2000, seed=3)
    assert mean == pytest.approx(float(x.mean()))
    assert lo < mean < hi
    # 95 % half-width ≈ 1.96·σ/√n = 0.196
    assert (hi - lo) / 2 == pytest.approx(1.96 * x.std(ddof=1) / 20, rel=0.15)
    assert bootstrap_ci(x, n=2000, seed=3) == (mean, lo, hi)
    assert bootstrap_ci(x, n=2000, seed=4) != (mean, lo, hi)
    # more data → narrower
    _, lo4, hi4 = bootstrap_ci(np.tile(x, 4), n=2000, seed=3)
    assert hi4 - lo4 < hi - lo


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([1.0, float("nan"), None, 3.0])[0] == 2.0
    with pytest.raises(ValueError, match="resample"):
        bootstrap_ci([1.0, 2.0], n=0)


def test_t_interval_across_seeds():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert hi - mean == pytest.approx(4.3027 * 1.0 / math.sqrt(3), rel=1e-4)
    assert t_interval([0.4]) == (0.4, 0.4, 0.4)
