"""Checks for chapter 6 (preventative steering): the steering hook, the response-only loss,
one LoRA training step with hooks, and the finetuning shift."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pvlens.core.chat import EncodedChat
from pvlens.core.steering import Steering
from pvlens.course.checks.inputs import LAYER, close, conversations, passed, run_check, tiny, vector
from pvlens.finetune.data import collate
from pvlens.finetune.lora import LoraConfig, add_lora
from pvlens.finetune.shift import shift_between
from pvlens.finetune.train import batch_loss_terms


def check_steering_hook(fn: Callable) -> None:
    """fn(v, alpha) -> a TransformerLens hook function adding alpha·v at every position."""
    def body() -> None:
        model = tiny()
        tokens = torch.tensor([conversations(model)[0].ids])
        v = vector(model.cfg.d_model, seed=5)
        name = f"blocks.{LAYER - 1}.hook_resid_post"
        for alpha in (0.0, 2.5, -4.0):
            ref = Steering(v, LAYER - 1, alpha, positions="all")
            want = model.run_with_hooks(tokens, fwd_hooks=[(name, ref.hook)])
            got = model.run_with_hooks(tokens, fwd_hooks=[(name, fn(v, alpha))])
            close(got, want, "steering_hook", "The hook returns resid + alpha * v (broadcast over batch "
                  "and positions).", atol=1e-4, rtol=1e-4)
    run_check("steering_hook", body)


def check_response_loss(fn: Callable) -> None:
    """fn(model, tokens [1, pos], prompt_len) -> mean cross-entropy over the response tokens."""
    def body() -> None:
        model = tiny()
        pad = model.tokenizer.pad_token_id or 0
        for chat in conversations(model):
            batch = collate([chat], [0], pad)
            ce, _ = batch_loss_terms(model, batch, "right")
            want = ce / batch.n_targets
            got = fn(model, torch.tensor([chat.ids]), chat.prompt_len)
            close(got.reshape(()), want.reshape(()), "response_loss",
                  "The logits at position t predict token t+1: use logits[prompt_len-1 : -1] against "
                  "tokens[prompt_len:], and average.", atol=1e-4, rtol=1e-4)
    run_check("response_loss", body)


def _reference_loss(model, tokens: Tensor, prompt_len: int) -> Tensor:
    logits = model(tokens)[0]
    return F.cross_entropy(logits[prompt_len - 1 : -1].float(), tokens[0, prompt_len:])


def _reference_step(model, optimizer, chats: Sequence[EncodedChat], hooks: list) -> float:
    optimizer.zero_grad()
    with model.hooks(fwd_hooks=hooks):
        loss = torch.stack([_reference_loss(model, torch.tensor([c.ids]), c.prompt_len) for c in chats]).mean()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def check_train_step(fn: Callable) -> None:
    """fn(model, optimizer, chats, hooks) -> loss: one optimiser step on the mean of the chats'
    response losses, with `hooks` active during the forward pass."""
    from pvlens.core.model import tiny_model

    results = []
    for step in (_reference_step, fn):
        model = tiny_model(n_layers=2, d_model=64)
        handle = add_lora(model, LoraConfig(r=2, alpha=4, targets=("q", "o", "down"), init_seed=0))
        with torch.no_grad():  # B starts at zero; make it non-zero so A's gradient is not zero too
            for p in handle.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
        opt = torch.optim.SGD(handle.parameters(), lr=0.5)
        v = vector(model.cfg.d_model, seed=6)
        hooks = [("blocks.0.hook_resid_post", Steering(v, 0, 2.0, positions="all").hook)]
        loss = step(model, opt, conversations(model), hooks)
        results.append((torch.tensor(float(loss)), [p.detach().clone() for p in handle.parameters()]))
    (l_ref, p_ref), (l_got, p_got) = results
    close(l_got, l_ref, "train_step", "Return the loss *before* the step: the mean over chats of "
          "response_loss, computed with the hooks active (model.hooks(fwd_hooks=...)).", atol=1e-4)
    close(torch.cat([p.flatten() for p in p_got]), torch.cat([p.flatten() for p in p_ref]), "train_step",
          "After zero_grad → loss.backward() → optimizer.step() the adapter weights should match the "
          "reference step.", atol=1e-4, rtol=1e-3)
    passed("train_step")


def check_projection_shift(fn: Callable) -> None:
    """fn(base_mean [d], finetuned_mean [d], v [d]) -> (finetuned − base) · v̂."""
    g = torch.Generator().manual_seed(7)
    base, ft, v = (torch.randn(32, generator=g, dtype=torch.float64) for _ in range(3))
    v = 5 * v
    want = shift_between(ft[None], base[None], (v / v.norm())[None], [0]).projection[0]
    close(torch.as_tensor(fn(base, ft, v)).reshape(()), want, "projection_shift",
          "Project the difference of the means on the *unit* vector.", atol=1e-5)
    passed("projection_shift")
