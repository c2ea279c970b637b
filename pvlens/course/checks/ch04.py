"""Checks for chapter 4 (monitoring): last-prompt projection, Pearson r, per-token projections."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import pearsonr

from pvlens.course.checks.inputs import (
    LAYER,
    close,
    conversations,
    passed,
    prompts,
    run_check,
    tiny,
    vector,
)
from pvlens.monitor.projection import projections
from pvlens.monitor.tokens import token_projections


def check_last_prompt_projection(fn: Callable) -> None:
    """fn(model, chats, v, layer) -> [n] projections of the last prompt token on v̂."""
    def body() -> None:
        model = tiny()
        chats = prompts(model) + conversations(model)
        v = vector(model.cfg.d_model)
        want = projections(model, chats, v, LAYER, progress=False)["last_prompt"]
        close(fn(model, chats, v, LAYER), want, "last_prompt_projection",
              "Take blocks.{layer}.hook_resid_post at position prompt_len - 1 (not the last token of a "
              "chat that has a reply) and dot it with v / ‖v‖.", atol=1e-3, rtol=1e-3)
    run_check("last_prompt_projection", body)


def check_pearson_r(fn: Callable[[Sequence[float], Sequence[float]], float]) -> None:
    """fn(x, y) -> Pearson's r."""
    g = np.random.default_rng(0)
    for n, noise in [(5, 0.1), (40, 1.0), (200, 3.0)]:
        x = g.normal(size=n) * 7 + 100  # an offset and a scale: r must not depend on them
        y = -0.5 * x + noise * g.normal(size=n)
        want = torch.tensor(float(pearsonr(x, y).statistic))
        close(torch.tensor(float(fn(list(x), list(y)))), want, "pearson_r",
              "r = cov(x, y) / (sd(x)·sd(y)); centre both variables first.", atol=1e-6)
    passed("pearson_r")


def check_token_projections(fn: Callable) -> None:
    """fn(model, chat, v, layer) -> [pos] projection of every token's residual on v̂."""
    def body() -> None:
        model = tiny()
        v = vector(model.cfg.d_model, seed=1)
        for chat in conversations(model)[:2]:
            want = torch.tensor(token_projections(model, chat, v, LAYER).values)
            close(fn(model, chat, v, LAYER), want, "token_projections",
                  "Use a hook on blocks.{layer}.hook_resid_post that stores the activation, then "
                  "project every position on v / ‖v‖.", atol=1e-3, rtol=1e-3)
    run_check("token_projections", body)


def check_results_ladder(levels: Sequence[int], projections_: Sequence[float]) -> None:
    """Second tier (default model, shipped evil vector): the most trait-eliciting rung of the
    ladder projects higher than the most suppressing one."""
    lv = np.asarray(levels)
    pr = np.asarray(projections_, dtype=float)
    top, bottom = pr[lv == lv.max()].mean(), pr[lv == lv.min()].mean()
    assert top > bottom, (
        f"ladder: mean projection at the top rung {top:.2f} is not above the bottom rung {bottom:.2f}; "
        "did you use the evil vector at the monitored layer and the last prompt token?")
    passed("results_ladder")
