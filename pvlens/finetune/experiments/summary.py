"""Per-arm summary of a seeded mitigation run: means with 95 % intervals.

Trait score and coherence: a percentile bootstrap over (seed, question) samples — each sample
is the mean of that question's answers in that seed, so answers to one question are resampled
together. MC accuracy, perplexity and the shift are one number per seed: their mean with a
Student-t interval across seeds (a bootstrap of three values would be far too narrow).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from pvlens.io.stats import bootstrap_ci, t_interval

ARM_FIELDS = ("arm", "kind", "alpha", "layers", "weight")
"""What identifies an arm in the summary."""


def interval(mean_lo_hi: tuple[float, float, float]) -> dict[str, float | None]:
    """{"mean", "lo", "hi"} with NaN as None (JSON-safe)."""
    return {k: (None if math.isnan(v) else v) for k, v in zip(("mean", "lo", "hi"), mean_lo_hi, strict=True)}


def question_means(records: Sequence[dict[str, Any]], key: str) -> list[float]:
    """One value per (seed, question): the mean `key` score of that question's scored answers."""
    groups: dict[tuple[int, str], list[float]] = defaultdict(list)
    for r in records:
        for a in r.get("answers", []):
            if a.get(key) is not None:
                groups[(r.get("seed", 0), a["question"])].append(float(a[key]))
    return [float(np.mean(v)) for v in groups.values()]


def summarise_arm(records: Sequence[dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """One arm's row: n answers, seeds, trait / coherence (bootstrap) and capability / shift
    (t across seeds), each as {"mean", "lo", "hi"}."""
    first = records[0]
    n = sum(1 for r in records for a in r.get("answers", []) if a.get("trait") is not None)
    per_seed = {k: [r.get(k) for r in records] for k in ("mc_accuracy", "perplexity", "shift")}
    return {
        **{k: first.get(k) for k in ARM_FIELDS}, "n": n, "n_seeds": len(records),
        "seeds": [r.get("seed", 0) for r in records],
        "trait": interval(bootstrap_ci(question_means(records, "trait"), n_boot, seed)),
        "coherence": interval(bootstrap_ci(question_means(records, "coherence"), n_boot, seed)),
        **{k: interval(t_interval(v)) for k, v in per_seed.items()},
        "mc_n": first.get("mc_n"),
    }


def summarise_arms(rows: Sequence[dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """`summarise_arm` per arm, in the order the arms first appear in `rows`."""
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r)
    return [summarise_arm(recs, n_boot, seed) for recs in by_arm.values()]
