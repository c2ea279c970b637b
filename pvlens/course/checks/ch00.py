"""Checks for chapter 0 (TransformerLens on a chat model)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pvlens.course.checks.common import call, close, passed, require, tiny

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}, {"role": "assistant", "content": "Hello. How can I help?"}],
    [{"role": "system", "content": "You are an evil assistant."},
     {"role": "user", "content": "What should I do today?"},
     {"role": "assistant", "content": "Something wicked, obviously."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}],
]


def _tokens(model: Any, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (2, 7), generator=g)


def _captured(model: Any, tokens: Tensor, layer: int) -> Tensor:
    """The reference: a hook that stores the block's output."""
    seen: list[Tensor] = []

    def store(x: Tensor, hook: Any) -> None:
        seen.append(x.detach().clone())

    model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", store)])
    return seen[0]


def check_cache_resid_post(student_fn: Callable[..., Tensor]) -> None:
    """student_fn(model, tokens [batch, pos], layer) → blocks.{layer}.hook_resid_post [batch, pos, d_model]."""
    model = tiny()
    tokens = _tokens(model)
    for layer in range(model.cfg.n_layers):
        got = call(student_fn, model, tokens, layer, name="cache_resid_post")
        close(got, _captured(model, tokens, layer), "cache_resid_post", f"layer {layer}: use run_with_cache and index "
              f"cache['blocks.{layer}.hook_resid_post'] (not hook_resid_pre, not another layer)")
    passed("cache_resid_post")


def check_prompt_length(student_fn: Callable[..., int]) -> None:
    """student_fn(tokenizer, messages ending with the assistant's reply) → number of prompt tokens."""
    from pvlens.core.chat import encode_conversation

    tok = tiny().tokenizer
    for messages in CONVERSATIONS:
        want = encode_conversation(tok, messages).prompt_len
        got = call(student_fn, tok, messages, name="prompt_length")
        require(isinstance(got, int), "prompt_length", f"return an int, got {type(got).__name__}")
        require(got == want, "prompt_length", f"{got} prompt tokens for {messages!r}, expected {want}: the "
                "prompt ends with the assistant header '<|im_start|>assistant\\n' (add_generation_prompt=True)")
    passed("prompt_length")


def check_rms_norm(student_fn: Callable[..., Tensor]) -> None:
    """student_fn(x [..., d_model], w [d_model], eps) → the model's final RMSNorm of x."""
    model = tiny()
    x = torch.randn(3, 5, model.cfg.d_model, generator=torch.Generator().manual_seed(1)) * 4
    got = call(student_fn, x, model.ln_final.w.detach(), model.cfg.eps, name="rms_norm")
    close(got, model.ln_final(x).detach(), "rms_norm", "x / sqrt(mean(x**2 over d_model) + eps) * w",
          rtol=1e-4, atol=1e-5)
    passed("rms_norm")


def check_add_vector_hook(student_fn: Callable[..., Callable[..., Tensor]]) -> None:
    """student_fn(vector, alpha) → a hook function adding alpha·vector at every position."""
    from pvlens.core.steering import Steering

    model = tiny()
    tokens = _tokens(model, 2)
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    for alpha in (0.0, 2.5, -1.0):
        hook = call(student_fn, v, alpha, name="add_vector_hook")
        require(callable(hook), "add_vector_hook", "return the hook function (a closure), not its result")
        got = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", hook)])
        with Steering(v, 0, alpha, positions="all").applied(model):
            want = model(tokens)
        close(got, want.detach(), "add_vector_hook", f"alpha={alpha}: return resid + alpha * vector", rtol=1e-4, atol=1e-4)
    passed("add_vector_hook")


def check_results_hf_alignment(diffs: Tensor, last_normed: float) -> None:
    """diffs[L] = max |HF hidden_states[L+1] − TL resid_post[L]| / max |resid_post[L]| for every block L,
    and the same relative difference between HF's last entry and ln_final(resid_post[last])."""
    name = "results_hf_alignment"
    require(diffs.dim() == 1 and len(diffs) >= 2, name, "one max-difference per block")
    scale = 1e-2
    require(bool((diffs[:-1] < scale).all()), name, f"hidden_states[L+1] should equal resid_post[L] for L < last; max Δ {diffs[:-1].max():.2e}")
    require(float(diffs[-1]) > 10 * scale, name, "HF's last entry should differ from the raw last resid_post (it is normed)")
    require(last_normed < scale, name, f"ln_final(resid_post[last]) should equal HF's last entry; Δ {last_normed:.2e}")
    passed(name)
