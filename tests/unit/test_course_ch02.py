"""Chapter 2's checks: a correct answer passes, a plausible wrong one fails."""

from __future__ import annotations

import pytest
import torch

from pvlens.course.checks import ch02


def response_steering_hook(vector, alpha, prompt_len):
    def hook(resid, hook):
        mask = (torch.arange(resid.shape[1]) >= prompt_len - 1).to(resid.dtype)
        return resid + alpha * mask[None, :, None] * vector
    return hook


def greedy_without_cache(model, prompt_ids, fwd_hooks, n_new):
    ids = list(prompt_ids)
    for _ in range(n_new):
        logits = model.run_with_hooks(torch.tensor([ids]), fwd_hooks=fwd_hooks)
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def test_correct_answers_pass(capsys):
    ch02.check_response_steering_hook(response_steering_hook)
    ch02.check_greedy_without_cache(greedy_without_cache)
    ch02.check_alpha_for_ratio(lambda v, n, r: r * n / v.norm())
    assert capsys.readouterr().out.count("passed") == 3


def _prompt_only(vector, alpha, prompt_len):  # steers from prompt_len, missing the last prompt token
    return response_steering_hook(vector, alpha, prompt_len + 1)


def _first_token_only(model, prompt_ids, fwd_hooks, n_new):  # argmax of position 0, not the last
    ids = list(prompt_ids)
    for _ in range(n_new):
        ids.append(int(model.run_with_hooks(torch.tensor([ids]), fwd_hooks=fwd_hooks)[0, 0].argmax()))
    return ids[len(prompt_ids):]


@pytest.mark.parametrize("check, wrong", [
    (ch02.check_response_steering_hook, _prompt_only),
    (ch02.check_response_steering_hook, lambda v, a, p: (lambda resid, hook: resid + a * v)),  # all positions
    (ch02.check_greedy_without_cache, _first_token_only),
    (ch02.check_alpha_for_ratio, lambda v, n, r: r * n),  # forgets ‖v‖
])
def test_wrong_answers_fail(check, wrong):
    with pytest.raises(AssertionError):
        check(wrong)
