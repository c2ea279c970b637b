"""Checks for chapter 2 (steering)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pvlens.course.checks.common import call, close, passed, require, tiny


def _setup(seed: int = 0) -> tuple[Any, Tensor, Tensor]:
    model = tiny()
    g = torch.Generator().manual_seed(seed)
    return model, torch.randint(0, model.cfg.d_vocab, (2, 9), generator=g), torch.randn(model.cfg.d_model, generator=g)


def reference_response_logits(model: Any, tokens: Tensor, vector: Tensor, alpha: float, prompt_len: int) -> Tensor:
    """pvlens's Steering(positions="response") in a full forward, told where the prompt ends."""
    from pvlens.core.hooks import PositionContext, position_context
    from pvlens.core.steering import Steering

    batch, seq = tokens.shape
    ctx = PositionContext(torch.arange(seq).expand(batch, seq), torch.full((batch,), prompt_len))
    with Steering(vector, 0, alpha, positions="response").applied(model), position_context(ctx):
        return model(tokens).detach()


def check_response_steering_hook(student_fn: Callable[..., Callable[..., Tensor]]) -> None:
    """student_fn(vector, alpha, prompt_len) → hook adding alpha·vector at positions ≥ prompt_len − 1."""
    model, tokens, v = _setup()
    for alpha, prompt_len in ((3.0, 5), (-2.0, 1), (1.5, 9)):
        hook = call(student_fn, v, alpha, prompt_len, name="response_steering_hook")
        require(callable(hook), "response_steering_hook", "return the hook function")
        got = model.run_with_hooks(tokens.clone(), fwd_hooks=[("blocks.0.hook_resid_post", hook)])
        want = reference_response_logits(model, tokens, v, alpha, prompt_len)
        close(got.detach(), want, "response_steering_hook",
              f"alpha={alpha}, prompt_len={prompt_len}: steer the LAST prompt token and every later one "
              "(positions prompt_len-1 onwards), leave earlier ones alone; do not edit resid in place "
              "for positions you do not own", rtol=1e-4, atol=1e-4)
    passed("response_steering_hook")


def _mask_hook(vector: Tensor, alpha: float, prompt_len: int) -> Callable[..., Tensor]:
    def hook(resid: Tensor, hook: Any) -> Tensor:
        out = resid.clone()
        out[:, prompt_len - 1:] += alpha * vector.to(resid.dtype)
        return out
    return hook


def check_greedy_without_cache(student_fn: Callable[..., list[int]]) -> None:
    """student_fn(model, prompt_ids, fwd_hooks, n_new) → n_new greedy token ids, recomputing the
    whole sequence each step (no KV cache); must equal pvlens.generate with the KV cache."""
    from pvlens.core.chat import EncodedChat
    from pvlens.core.generation import generate
    from pvlens.core.steering import Steering

    model, tokens, v = _setup(1)
    prompt = tokens[0].tolist()
    for alpha in (0.0, 4.0):
        hooks = [("blocks.0.hook_resid_post", _mask_hook(v, alpha, len(prompt)))]
        got = call(student_fn, model, prompt, hooks, 6, name="greedy_without_cache")
        require(isinstance(got, list) and len(got) == 6, "greedy_without_cache", "return a list of 6 new token ids")
        ref = generate(model, [EncodedChat(prompt, len(prompt))], steer=Steering(v, 0, alpha, positions="response"),
                       max_new_tokens=6, stop_at_eos=False, progress=False, use_cache=True)
        want = ref.chats[0].response_ids
        require([int(t) for t in got] == want, "greedy_without_cache",
                f"alpha={alpha}: tokens {got} vs KV-cached pvlens.generate {want}; append the argmax of the "
                "LAST position's logits and run the whole sequence again with the same hooks")
    passed("greedy_without_cache")


def check_alpha_for_ratio(student_fn: Callable[..., float]) -> None:
    """student_fn(vector, resid_norm, ratio) → alpha such that ‖alpha·vector‖ = ratio · resid_norm."""
    v = torch.randn(32, generator=torch.Generator().manual_seed(2)) * 3
    for resid_norm, ratio in ((50.0, 0.1), (120.0, 0.5), (10.0, 2.0)):
        got = float(call(student_fn, v, resid_norm, ratio, name="alpha_for_ratio"))
        want = ratio * resid_norm / float(v.norm())
        require(abs(got - want) < 1e-4 * max(1, want), "alpha_for_ratio",
                f"got {got:.4f}, expected {want:.4f} (α scales the RAW vector: ‖αv‖ = α‖v‖)")
    passed("alpha_for_ratio")
