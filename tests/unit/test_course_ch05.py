"""Chapter 5 checks: each reference answer passes its check, a plausible wrong answer fails it."""

from __future__ import annotations

import pytest
import torch

from pvlens.course.checks import ch05
from pvlens.vectors.validate import auroc, projection_aurocs, random_directions


def _resid(model, chat, layer):
    name = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(torch.tensor([chat.ids]), names_filter=[name])
    return cache[name][0].float()


def _unit(v):
    return v.float() / v.float().norm()


def test_ch05_projections():
    ch05.check_response_avg_projection(lambda m, c, v, layer: _resid(m, c, layer)[c.prompt_len:].mean(0) @ _unit(v))
    with pytest.raises(AssertionError):  # the response started one token late
        ch05.check_response_avg_projection(
            lambda m, c, v, layer: _resid(m, c, layer)[c.prompt_len + 1:].mean(0) @ _unit(v))

    def approx(m, c, v, layer):
        x = _resid(m, c, layer) @ _unit(v)
        return x[c.prompt_len:].mean() - x[c.prompt_len - 1]
    ch05.check_prompt_only_delta(approx)
    with pytest.raises(AssertionError):  # prompt average instead of the last prompt token
        ch05.check_prompt_only_delta(lambda m, c, v, layer: (_resid(m, c, layer) @ _unit(v))[c.prompt_len:].mean()
                                     - (_resid(m, c, layer) @ _unit(v))[:c.prompt_len].mean())


def test_ch05_auroc_and_null():
    ch05.check_auroc(lambda p, n: float(auroc(p, n)))
    with pytest.raises(AssertionError):  # ties counted as losses
        ch05.check_auroc(lambda p, n: float((p[:, None] > n[None, :]).double().mean()))
    ch05.check_random_direction_aurocs(
        lambda t, c, k, s: projection_aurocs(t, c, random_directions(k, t.shape[-1], s)))
    with pytest.raises(AssertionError):  # another seed
        ch05.check_random_direction_aurocs(
            lambda t, c, k, s: projection_aurocs(t, c, random_directions(k, t.shape[-1], s + 1)))
