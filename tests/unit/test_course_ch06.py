"""Chapter 6 checks: each reference answer passes its check, a plausible wrong answer fails it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pvlens.course.checks import ch06


def _loss(model, tokens, prompt_len):
    return F.cross_entropy(model(tokens)[0][prompt_len - 1:-1].float(), tokens[0, prompt_len:])


def test_ch06_hook_and_loss():
    ch06.check_steering_hook(lambda v, a: (lambda r, hook: r + a * v))
    with pytest.raises(AssertionError):  # unit vector instead of raw
        ch06.check_steering_hook(lambda v, a: (lambda r, hook: r + a * v / v.norm()))
    ch06.check_response_loss(_loss)
    with pytest.raises(AssertionError):  # off by one: logits at t scored against token t
        ch06.check_response_loss(lambda m, t, p: F.cross_entropy(m(t)[0][p:].float(), t[0, p:]))


def test_ch06_train_step_and_shift():
    def step(model, opt, chats, hooks, use_hooks=True):
        opt.zero_grad()
        with model.hooks(fwd_hooks=hooks if use_hooks else []):
            loss = torch.stack([_loss(model, torch.tensor([c.ids]), c.prompt_len) for c in chats]).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())
    ch06.check_train_step(step)
    with pytest.raises(AssertionError):  # hooks ignored
        ch06.check_train_step(lambda *a: step(*a, use_hooks=False))
    ch06.check_projection_shift(lambda b, f, v: float((f - b) @ (v / v.norm())))
    with pytest.raises(AssertionError):
        ch06.check_projection_shift(lambda b, f, v: float((f - b) @ v))
