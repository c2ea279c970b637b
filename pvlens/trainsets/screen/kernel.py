"""Activations for screening: each prompt runs once into a KV cache, then the dataset's reply
and the base model's reply both continue it (public `engine.new_cache` / `KVCache.rewind` API).
Every pass stops at the deepest projected layer and skips the unembedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect, token_batches
from pvlens.core.batching import left_pad
from pvlens.core.chat import EncodedChat
from pvlens.core.device import fast_dtype
from pvlens.core.engine import FastEngine, KVCache, engine_for

KEYS = ("data", "base", "last_prompt", "prompt_avg")
"""What `paired_activations` returns: response averages of both replies and two prompt reductions."""

Activations = dict[str, Float[Tensor, "n d_model"] | Float[Tensor, "n n_layers d_model"]]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Compute dtypes by name (plus "auto": bf16 where the CPU is fast at it, else fp32)."""


def compute_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """'auto' → the fast dtype of `device`; a dtype name → the torch dtype; None stays None
    (the model's own dtype)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return fast_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def _separate_passes(model: HookedTransformer, data: Sequence[EncodedChat], base: Sequence[EncodedChat],
                     layers: list[int], max_tokens: int, max_batch: int,
                     dtype: torch.dtype | None) -> dict[str, Tensor]:
    """The fallback: two ordinary `collect` passes (no shared prompt cache)."""
    a = collect(model, data, ("response_avg", "last_prompt", "prompt_avg"), layers=layers,
                batch_size=max_batch, max_tokens=max_tokens, dtype=dtype, progress=False)
    b = collect(model, base, ("response_avg",), layers=layers, batch_size=max_batch,
                max_tokens=max_tokens, dtype=dtype, progress=False)
    return {"data": a["response_avg"], "base": b["response_avg"],
            "last_prompt": a["last_prompt"], "prompt_avg": a["prompt_avg"]}


class _PairedBatch:
    """One batch of prompt-sharing pairs run through the engine with one KV cache."""

    def __init__(self, engine: FastEngine, layers: list[int], pad: int, device: torch.device) -> None:
        self.engine, self.layers, self.pad, self.device = engine, layers, pad, device
        self.slot = {lay: j for j, lay in enumerate(layers)}
        self.keep = max(layers) + 1
        self.grab: dict[int, Tensor] = {}

    def _at_layer(self, i: int, x: Tensor) -> None:
        if i in self.slot:
            self.grab[self.slot[i]] = x.float()

    def _forward(self, tok: Tensor, pos: Tensor, cache: KVCache) -> None:
        self.engine.forward(tok, pos, cache, stop_at_layer=self.keep, on_resid=self._at_layer, logits=None)

    def _masked_mean(self, mask: Tensor) -> Tensor:  # [rows, n_layers, d], accumulated in float64
        m = mask.double()
        xs = torch.stack([self.grab[j].double() for j in range(len(self.layers))], dim=1)
        return (torch.einsum("bt,bltd->bld", m, xs) / m.sum(-1).clamp(min=1)[:, None, None]).float()

    def _replies(self, chats: list[EncodedChat]) -> tuple[Tensor, Tensor]:
        r_len = max(c.response_len for c in chats)
        tok = torch.full((len(chats), r_len), self.pad, dtype=torch.long)
        pos = torch.full((len(chats), r_len), -1, dtype=torch.long)
        for j, c in enumerate(chats):
            tok[j, : c.response_len] = torch.tensor(c.response_ids)
            pos[j, : c.response_len] = torch.arange(c.prompt_len, c.prompt_len + c.response_len)
        return tok.to(self.device), pos.to(self.device)

    def run(self, data: list[EncodedChat], base: list[EncodedChat]) -> dict[str, Tensor]:
        """The four reductions for these rows, each [rows, n_layers, d_model] on the CPU."""
        prompts = [EncodedChat(c.prompt_ids, c.prompt_len) for c in data]
        p_tok, p_pos = left_pad(prompts, self.pad, self.device)
        width = p_tok.shape[1]
        r_max = max(c.response_len for c in (*data, *base))
        cache = self.engine.new_cache(len(data), width + r_max, n_layers=self.keep)
        self._forward(p_tok, p_pos, cache)
        out = {"last_prompt": torch.stack([self.grab[j][:, -1] for j in range(len(self.layers))], 1).cpu(),
               "prompt_avg": self._masked_mean(p_pos >= 0).cpu()}
        for side, chats in (("data", data), ("base", base)):
            cache.rewind(width)  # forget the other side's reply: both continue the prompt
            tok, pos = self._replies(chats)
            self._forward(tok, pos, cache)
            out[side] = self._masked_mean(pos >= 0).cpu()
        return out


@torch.inference_mode()
def paired_activations(
    model: HookedTransformer,
    data: Sequence[EncodedChat],
    base: Sequence[EncodedChat],
    layer: int | Sequence[int],
    max_tokens: int = 4096,
    max_batch: int = 16,
    dtype: torch.dtype | str | None = "auto",
) -> Activations:
    """Residuals at `layer` for pairs of conversations that share their prompt.

    Returns response averages of the data and base replies ("data", "base"), and the prompt's
    last-token and average residuals ("last_prompt", "prompt_avg"): [n, d_model] for one layer,
    [n, len(layers), d_model] for a list. Each prompt runs once into a KV cache (only the
    layers up to the deepest requested), then each side's replies run against it; falls back
    to two `collect` passes when the fast engine cannot run the model or a pair's prompts differ.
    """
    n = len(data)
    if len(base) != n:
        raise ValueError(f"{n} data conversations but {len(base)} base conversations")
    single = isinstance(layer, int)
    layers = [int(layer)] if isinstance(layer, int) else [int(x) for x in layer]
    dt = compute_dtype(dtype, model.W_E.device)
    engine = engine_for(model, dt)
    same = all(a.prompt_ids == b.prompt_ids for a, b in zip(data, base, strict=True))
    if engine is None or not same:
        out = _separate_passes(model, data, base, layers, max_tokens, max_batch, dt)
    else:
        out = {k: torch.zeros(n, len(layers), model.cfg.d_model) for k in KEYS}
        runner = _PairedBatch(engine, layers, model.tokenizer.pad_token_id or 0, model.W_E.device)
        cost = [c.prompt_len + c.response_len + b.response_len for c, b in zip(data, base, strict=True)]
        for idx in token_batches(cost, max_tokens, max_batch):
            part = runner.run([data[i] for i in idx], [base[i] for i in idx])
            for k, v in part.items():
                out[k][idx] = v
    return {k: v[:, 0] for k, v in out.items()} if single else out
