"""The guard ROC analysis: its analytic trigger decision (unguarded replies, the shared
projection routine, `first_crossing`) equals what `generate(..., guard=...)` reports, the
fed-token rule, and the per-cell rates / recommendation on synthetic projections."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.chat import EncodedChat
from pvlens.core.generation import GenerationResult
from pvlens.core.guard import Guard, GuardRule, first_crossing, window_means
from pvlens.monitor.calibrate import monitored_projections
from pvlens.monitor.guard_roc import GuardRocConfig, cell, fed_chat, guard_roc_table, recommend

torch.set_num_threads(1)

PROMPTS = [
    "Hi",
    "What is the capital of France? Answer in one word please.",
    "Write a haiku about autumn leaves.",
    "Tell me a story about a dragon and a knight.",
    "How do I bake bread?",
    "Name three colours.",
]
N_NEW = 12
LAYER = 1


@pytest.fixture(scope="module")
def vec(tiny):
    g = torch.Generator().manual_seed(5)
    v = torch.randn(tiny.cfg.d_model, generator=g)
    return v / v.norm() * 300.0


@pytest.fixture(scope="module")
def analytic(tiny, vec):
    """Unguarded greedy replies and each row's monitored projections on the unit vector."""
    res = pvlens.generate(tiny, PROMPTS, max_new_tokens=N_NEW, progress=False)
    u = (vec / vec.norm())[None]
    return [monitored_projections(tiny, fed_chat(res, i), {LAYER: u})[LAYER][0] for i in range(len(PROMPTS))]


def _thresholds(values: list[torch.Tensor], window: int) -> list[float]:
    """Midpoints between neighbouring window means at three quantiles (no ties with a value)."""
    means = torch.cat([window_means(v, window) for v in values])
    means = torch.unique(means[torch.isfinite(means)]).sort().values
    picks = [int(q * (means.numel() - 2)) for q in (0.3, 0.7, 0.95)]
    return [float((means[i] + means[i + 1]) / 2) for i in picks]


@pytest.mark.parametrize("window", [1, 3])
def test_analytic_trigger_equals_generate(tiny, vec, analytic, window):
    seen_hit = seen_miss = False
    for thr in _thresholds(analytic, window):
        guard = Guard([GuardRule(vec, thr, "t")], LAYER, alpha=8.0, window=window)
        res = pvlens.generate(tiny, PROMPTS, max_new_tokens=N_NEW, progress=False, guard=guard)
        for i, vals in enumerate(analytic):
            idx, event = first_crossing(vals, window, thr), res.triggered[i]
            assert (None if event is None else event.reply_index) == (None if idx is None else idx - 1), (thr, i)
            seen_hit |= idx is not None
            seen_miss |= idx is None
    assert seen_hit and seen_miss  # the settings exercise both outcomes


def test_fed_chat_drops_only_an_unfed_last_token():
    chats = [EncodedChat(ids=[1, 2, 3, 4, 5], prompt_len=3), EncodedChat(ids=[1, 2, 3, 4, 5], prompt_len=3)]
    res = GenerationResult(texts=["a", "b"], chats=chats, finished=[True, False])
    assert fed_chat(res, 0).ids == [1, 2, 3, 4, 5]
    assert fed_chat(res, 1).ids == [1, 2, 3, 4] and fed_chat(res, 1).prompt_len == 3


def _synthetic(n_random: int = 3) -> tuple[dict, GuardRocConfig]:
    """Eliciting replies peak at 5 on the trait direction, benign ones at 1; calibration 0..1."""
    k = 1 + n_random

    def proj(peak: float) -> dict[int, torch.Tensor]:
        vals = torch.zeros(k, 6)
        vals[0, 3] = peak
        vals[1:, 2] = torch.arange(1, k).float()  # random directions: same on both sets
        return {7: vals}

    data = {"eliciting": [proj(5.0) for _ in range(4)], "benign": [proj(1.0) for _ in range(4)],
            "calibration": [{7: torch.linspace(0, c / 10, 6)[None]} for c in range(10)],
            "conditions": ["a", "a", "b", "b"]}
    return data, GuardRocConfig(windows=[1], fprs=[0.1], n_random=n_random)


def test_cell_rates_auroc_and_recommendation():
    data, cfg = _synthetic()
    c = cell(data, 7, 1, cfg)
    f = c["fprs"][0]
    assert f["threshold"] == pytest.approx(0.8)  # 1 of 10 calibration maxima (0.9) above it
    assert f["eliciting"]["k"] == 4 and f["benign"]["k"] == 4  # 1.0 > 0.8 too: benign triggers
    assert c["auroc"] == 1.0 and c["null"]["p95"] == 0.5
    assert recommend([c]) is None  # both rates 100 %: nothing separates
    data["benign"] = [{7: torch.zeros(4, 6)} for _ in range(4)]
    c2 = cell(data, 7, 1, cfg)
    assert c2["fprs"][0]["benign"]["k"] == 0
    rec = recommend([c, c2])
    assert rec is not None and rec["gap"] == 1.0 and rec["layer"] == 7
    table = guard_roc_table({"config": cfg.model_dump(), "cells": [c2], "recommended": rec,
                             "n": {"eliciting": 4, "benign": 4, "calibration": 10}, "conditions": ["a", "b"]})
    assert "| 7 | 1 | 1.00" in table and "largest separated gap: layer 7" in table


def test_bulk_generate_resets_a_reused_guard(tiny, vec, analytic):
    """`pvlens guard measure` runs one Guard through two bulk_generate calls (eliciting, then
    benign): the second must equal a fresh guard's run, not inherit the first's triggers."""
    from pvlens.core.bulk import bulk_generate
    from pvlens.core.config import SamplingConfig

    first, second = PROMPTS[:3], PROMPTS[3:]
    sampling = SamplingConfig(max_new_tokens=N_NEW, temperature=0.0)

    def run(guard, prompts):
        res = bulk_generate(tiny, prompts, sampling, steer=guard)
        return res.texts, [(e.row, e.position) for e in guard.events()]

    for thr in _thresholds(analytic, 1):
        def make(t: float = thr) -> Guard:
            return Guard([GuardRule(vec, t, "t")], LAYER, alpha=8.0)

        a, b = run(make(), first), run(make(), second)
        if {r for r, _ in a[1]} - {r for r, _ in b[1]}:  # a row triggers in the first run only
            reused = make()
            run(reused, first)
            assert run(reused, second) == b
            return
    pytest.fail("no threshold where the runs trigger on different rows")
