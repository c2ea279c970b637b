"""Chapter 4 checks: each reference answer passes its check, a plausible wrong answer fails it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvlens.course.checks import ch04


def _resid(model, chat, layer):
    name = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(torch.tensor([chat.ids]), names_filter=[name])
    return cache[name][0].float()


def _unit(v):
    return v.float() / v.float().norm()


def last_prompt(model, chats, v, layer, offset=1):
    return torch.stack([_resid(model, c, layer)[c.prompt_len - offset] @ _unit(v) for c in chats])


def test_ch04_last_prompt_projection():
    ch04.check_last_prompt_projection(last_prompt)
    with pytest.raises(AssertionError):  # the last token of the chat, not of the prompt
        ch04.check_last_prompt_projection(lambda m, cs, v, layer: torch.stack(
            [_resid(m, c, layer)[-1] @ _unit(v) for c in cs]))
    with pytest.raises(AssertionError):  # raw vector instead of unit
        ch04.check_last_prompt_projection(lambda m, cs, v, layer: torch.stack(
            [_resid(m, c, layer)[c.prompt_len - 1] @ v for c in cs]))


def test_ch04_pearson_and_tokens():
    ch04.check_pearson_r(lambda x, y: float(np.corrcoef(x, y)[0, 1]))
    with pytest.raises(AssertionError):  # uncentred "correlation"
        ch04.check_pearson_r(lambda x, y: float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y)))
    ch04.check_token_projections(lambda m, c, v, layer: _resid(m, c, layer) @ _unit(v))
    with pytest.raises(AssertionError):  # the wrong layer
        ch04.check_token_projections(lambda m, c, v, layer: _resid(m, c, layer - 1) @ _unit(v))


def test_ch04_results_ladder():
    ch04.check_results_ladder([0, 0, 7, 7], [-3.0, -2.0, 1.0, 0.0])
    with pytest.raises(AssertionError):
        ch04.check_results_ladder([0, 0, 7, 7], [1.0, 2.0, -1.0, 0.0])
