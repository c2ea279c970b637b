"""Per-layer residual-stream reductions for many conversations in one streaming pass.

For each conversation and each layer (`blocks.{l}.hook_resid_post`) the pass keeps only
reductions — mean over response tokens, mean over prompt tokens, the last prompt token —
never the [tokens × layers × d_model] activations of a whole dataset. Conversations are
batched by length (little padding), run in the fastest dtype the hardware has (bf16 on
AMX / bf16 GPUs, fp32 otherwise) and reduced in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from pvlens.core.batching import left_pad
from pvlens.core.chat import EncodedChat
from pvlens.core.device import as_dtype
from pvlens.core.engine import FastEngine, KVCache, engine_for
from pvlens.core.hooks import PositionContext, position_context, resid_hook_name
from pvlens.core.sharing import length_batches, prefix_plan, rows_interchangeable
from pvlens.core.steering import Intervention
from pvlens.core.steering import steer as steering_context

REDUCTIONS = ("response_avg", "prompt_avg", "last_prompt")
SHARE_WINDOW_BATCHES = 4
"""The shared-prefix pass plans this many batches' worth of conversations at a time: its prefix
caches and sums then stay bounded however large the dataset (streaming memory stays flat)."""


def token_batches(lengths: Sequence[int], max_tokens: int, max_batch: int) -> list[list[int]]:
    """Indices grouped by similar length so each padded batch holds ≤ max_tokens tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    width = 0
    for i in order:
        w = max(width, lengths[i])
        if cur and (w * (len(cur) + 1) > max_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    if cur:
        batches.append(cur)
    return batches


class _Reducer:
    """Accumulates the requested reductions for one batch, layer by layer."""

    def __init__(
        self,
        positions: Int[Tensor, "batch pos"],
        prompt_lens: Int[Tensor, " batch"],
        reductions: Sequence[str],
        layer_slot: dict[int, int],
        d_model: int,
        prefix: tuple[Tensor, Tensor] | None = None,
    ):
        """`prefix`: (sums [batch, n_kept_layers, d_model] float64, lengths [batch]) of each
        row's prompt tokens computed in a shared prefix pass (their positions come first)."""
        valid = positions >= 0
        p = prompt_lens[:, None]
        self.prefix = prefix
        self.masks: dict[str, Tensor] = {}
        if "response_avg" in reductions:
            self.masks["response_avg"] = valid & (positions >= p)
        if "prompt_avg" in reductions:
            self.masks["prompt_avg"] = valid & (positions < p)
        if "all_avg" in reductions:
            self.masks["all_avg"] = valid
        self.last = None
        if "last_prompt" in reductions:  # the column holding position prompt_len - 1
            self.last = (positions == p - 1).int().argmax(-1)
        self.layer_slot = layer_slot
        n = positions.shape[0]
        self.out = {r: torch.zeros(n, len(layer_slot), d_model) for r in reductions}

    def __call__(self, layer: int, x: Float[Tensor, "batch pos d_model"]) -> None:
        slot = self.layer_slot.get(layer)
        if slot is None:
            return
        x = x.float()
        for name, mask in self.masks.items():
            m = mask.to(x.dtype)
            sums = torch.einsum("bt,btd->bd", m, x).double()
            counts = mask.sum(-1, keepdim=True).double()
            if self.prefix is not None and name in ("prompt_avg", "all_avg"):
                sums = sums + self.prefix[0][:, slot].to(sums.device)
                counts = counts + self.prefix[1][:, None].to(counts.device)
            self.out[name][:, slot] = (sums / counts.clamp(min=1)).float().cpu()
        if self.last is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            self.out["last_prompt"][:, slot] = x[rows, self.last.to(x.device)].cpu()


@torch.inference_mode()
def collect(
    model: HookedTransformer,
    chats: Sequence[EncodedChat],
    reductions: Sequence[str] = REDUCTIONS,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    max_tokens: int = 8192,
    dtype: torch.dtype | str | None = "auto",
    steer: Intervention | Sequence[Intervention] | None = None,
    progress: bool = True,
) -> dict[str, Float[Tensor, "n_samples n_layers d_model"]]:
    """Reductions of `blocks.{l}.hook_resid_post` for each conversation and layer.

    Args:
        chats: conversations with their prompt/response boundary (EncodedChat).
        reductions: any of "response_avg", "prompt_avg", "last_prompt", "all_avg".
        layers: block indices to keep (default all); the pass stops after the last one.
        batch_size / max_tokens: batch limits (padded tokens per batch).
        dtype: compute dtype (a torch.dtype or a name); "auto" picks bf16 where the hardware
            runs it fast, else fp32; None: the model's.
        steer: Steering/Ablation(s) active during the pass.
    Returns: {reduction: float32 tensor [n_samples, len(layers), d_model]}.
    """
    _check_reductions(reductions, chats)
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(x) % n_layers for x in layers]
    device = model.W_E.device
    dtype = as_dtype(dtype, device)
    layer_slot = {layer: j for j, layer in enumerate(layers)}
    out = {r: torch.zeros(len(chats), len(layers), model.cfg.d_model) for r in reductions}
    batches = token_batches([len(c.ids) for c in chats], max_tokens, batch_size)
    pad_id = model.tokenizer.pad_token_id or 0
    share = rows_interchangeable(model, steer)
    with steering_context(model, steer):
        engine = engine_for(model, dtype)
        if engine is not None and share:
            # windows of conversations in prompt order (clusters stay together), each planned
            # and run on its own, so the prefix caches and sums held at once stay bounded
            order = sorted(range(len(chats)), key=lambda i: chats[i].ids[: chats[i].prompt_len])
            window = SHARE_WINDOW_BATCHES * batch_size
            plain: list[int] = []
            for w in tqdm(range(0, len(order), window), desc="activations",
                          disable=not progress or len(order) <= window):
                idx = order[w : w + window]
                shared = _SharedPrefixPass(engine, [chats[i] for i in idx], layer_slot, max(layers) + 1, pad_id)
                if not shared.worthwhile:
                    plain += idx
                    continue
                got = shared.run(reductions, model.cfg.d_model, max_tokens, batch_size, progress=False)
                for r in reductions:
                    out[r][idx] = got[r]
            batches = [[plain[j] for j in b]
                       for b in token_batches([len(chats[i].ids) for i in plain], max_tokens, batch_size)]
        for idx in tqdm(batches, desc="activations", disable=not progress or len(batches) < 2):
            group = [chats[i] for i in idx]
            tokens, positions = left_pad(group, pad_id, device)
            prompt_lens = torch.tensor([c.prompt_len for c in group], device=device)
            reducer = _Reducer(positions, prompt_lens, reductions, layer_slot, model.cfg.d_model)
            rows = torch.tensor(idx, device=device)
            with position_context(PositionContext(positions, prompt_lens, rows)):
                if engine is not None:
                    engine.forward(tokens, positions, stop_at_layer=max(layers) + 1,
                                   on_resid=reducer, logits=None)
                else:
                    tl_forward(model, tokens, positions, layers, reducer)
            for r in reductions:
                out[r][idx] = reducer.out[r]
    return out


class _SharedPrefixPass:
    """`collect` with prompt prefixes shared by several conversations computed once
    (`pvlens.core.sharing.prefix_plan`): the prefix of every prompt (e.g. the chat template's
    system header), then each cluster's longer one (e.g. one instruction's system prompt),
    then each conversation's own rest continuing a copy of its prefix's cache. The
    prefix tokens' residual sums are added to every member's prompt_avg / all_avg, so the
    reductions equal the unshared pass's (up to float summation order)."""

    def __init__(self, engine: FastEngine, chats: Sequence[EncodedChat], layer_slot: dict[int, int],
                 n_blocks: int, pad_id: int):
        self.engine, self.chats, self.layer_slot = engine, chats, layer_slot
        self.n_blocks, self.pad_id = n_blocks, pad_id
        prompts = [c.ids[: c.prompt_len] for c in chats]
        self.common, self.cluster_of, self.cluster_len = prefix_plan(prompts)
        computed = sum(len(c.ids) - self.cluster_len[k] for c, k in zip(chats, self.cluster_of, strict=True))
        computed += self.common + sum(n - self.common for n in self.cluster_len)
        # the plan pays a few extra forwards; skip it unless it saves a tenth of the tokens
        self.worthwhile = computed < 0.9 * sum(len(c.ids) for c in chats)

    def _forward(self, tokens: Tensor, positions: Tensor, prompt_lens: Sequence[int], rows: Sequence[int],
                 cache: KVCache, on_resid: Callable[[int, Tensor], None]) -> None:
        dev = self.engine.device
        self._positions = positions
        ctx = PositionContext(positions, torch.tensor(list(prompt_lens), device=dev), torch.tensor(list(rows), device=dev))
        with position_context(ctx):
            self.engine.forward(tokens, positions, cache, stop_at_layer=self.n_blocks, on_resid=on_resid, logits=None)

    def _token_sums(self, n_rows: int, d_model: int) -> tuple[Tensor, Callable[[int, Tensor], None]]:
        """A [rows, kept layers, d_model] float64 buffer and the callback filling it with each
        row's sum over its real tokens of this forward."""
        sums = torch.zeros(n_rows, len(self.layer_slot), d_model, dtype=torch.float64)

        def fill(layer: int, x: Tensor) -> None:
            slot = self.layer_slot.get(layer)
            if slot is not None:
                valid = (self._positions >= 0).to(x.dtype)
                sums[:, slot] = torch.einsum("bt,btd->bd", valid, x.float()).double().cpu()

        return sums, fill

    def run(self, reductions: Sequence[str], d_model: int, max_tokens: int, batch_size: int,
            progress: bool) -> dict[str, Tensor]:
        chats, common, cluster_of, cluster_len = self.chats, self.common, self.cluster_of, self.cluster_len
        min_len = min(c.prompt_len for c in chats)
        head = self.engine.new_cache(1, max(common, 1), n_layers=self.n_blocks)
        head_sums = torch.zeros(1, len(self.layer_slot), d_model, dtype=torch.float64)
        if common:
            head_sums, fill = self._token_sums(1, d_model)
            self._forward(*left_pad([chats[0].ids[:common]], self.pad_id, self.engine.device), [min_len], [0], head, fill)
        source: dict[int, tuple[KVCache, int]] = {k: (head, 0) for k in range(len(cluster_len))}
        sums: dict[int, Tensor] = {k: head_sums[0] for k in range(len(cluster_len))}
        longer = [k for k, n in enumerate(cluster_len) if n > common]
        for batch in length_batches([cluster_len[k] - common for k in longer]):
            ks = [longer[j] for j in batch]
            first = [cluster_of.index(k) for k in ks]
            cache = KVCache.gather([(head, 0)] * len(ks), max(cluster_len[k] for k in ks))
            extra, fill = self._token_sums(len(ks), d_model)
            parts = [chats[i].ids[common : cluster_len[k]] for i, k in zip(first, ks, strict=True)]
            members = [min(chats[i].prompt_len for i, x in enumerate(cluster_of) if x == k) for k in ks]
            self._forward(*left_pad(parts, self.pad_id, self.engine.device, [common] * len(ks)), members, first, cache, fill)
            for r, k in enumerate(ks):
                source[k], sums[k] = (cache, r), head_sums[0] + extra[r]
        out = {r: torch.zeros(len(chats), len(self.layer_slot), d_model) for r in reductions}
        rest = [len(c.ids) - cluster_len[k] for c, k in zip(chats, cluster_of, strict=True)]
        batches = token_batches(rest, max_tokens, batch_size)
        for idx in tqdm(batches, desc="activations", disable=not progress or len(batches) < 2):
            srcs = [source[cluster_of[i]] for i in idx]
            cache = KVCache.gather(srcs, max(c.length for c, _ in srcs) + max(rest[i] for i in idx))
            parts = [chats[i].ids[cluster_len[cluster_of[i]] :] for i in idx]
            starts = [cluster_len[cluster_of[i]] for i in idx]
            tokens, positions = left_pad(parts, self.pad_id, self.engine.device, starts)
            prompt_lens = torch.tensor([chats[i].prompt_len for i in idx], device=positions.device)
            prefix = (torch.stack([sums[cluster_of[i]] for i in idx]),
                      torch.tensor(starts, dtype=torch.float64))
            reducer = _Reducer(positions, prompt_lens, reductions, self.layer_slot, d_model, prefix)
            self._forward(tokens, positions, prompt_lens.tolist(), idx, cache, reducer)
            for name in reductions:
                out[name][idx] = reducer.out[name]
        return out


def _check_reductions(reductions: Sequence[str], chats: Sequence[EncodedChat]) -> None:
    bad = set(reductions) - {*REDUCTIONS, "all_avg"}
    if bad:
        raise ValueError(f"unknown reductions {sorted(bad)}; choose from {REDUCTIONS + ('all_avg',)}")
    if "response_avg" in reductions:
        empty = [i for i, c in enumerate(chats) if c.response_len == 0]
        if empty:
            raise ValueError(
                f"{len(empty)} conversation(s) have no response tokens (first: index {empty[0]}); "
                "response_avg needs replies — use prompt_avg/last_prompt for prompts only"
            )


def tl_forward(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    positions: Int[Tensor, "batch pos"],
    layers: Sequence[int],
    on_resid: Callable[[int, Float[Tensor, "batch pos d_model"]], None],
) -> None:
    """TransformerLens forward over left-padded `tokens` (`positions` -1 = padding) that hands
    each listed block's output to `on_resid(layer, resid)` and stops after the last one: the
    fallback for models or hooks the fast engine does not cover."""

    def capture(layer: int) -> Callable[[Tensor, HookPoint], None]:
        def fn(resid: Tensor, hook: HookPoint) -> None:
            on_resid(layer, resid)

        return fn

    hooks: list[tuple[str | Callable, Callable]] = [(resid_hook_name(layer), capture(layer)) for layer in layers]
    mask = (positions >= 0).long()
    with model.hooks(fwd_hooks=hooks):
        model(tokens, attention_mask=mask, padding_side="left", stop_at_layer=max(layers) + 1)


def per_token(
    model: HookedTransformer, chat: EncodedChat, layers: Sequence[int] | None = None,
    dtype: torch.dtype | str | None = None,
) -> Float[Tensor, "n_layers pos d_model"]:
    """Every token's residual at the given layers for one conversation (for per-token views)."""
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(x) % n_layers for x in layers]
    store: dict[int, Tensor] = {}
    tokens = torch.tensor([chat.ids], device=model.W_E.device)
    positions = torch.arange(len(chat.ids), device=tokens.device)[None]
    engine = engine_for(model, as_dtype(dtype, model.W_E.device))
    with torch.inference_mode(), position_context(
        PositionContext(positions, torch.tensor([chat.prompt_len], device=tokens.device))
    ):
        if engine is not None:
            engine.forward(tokens, positions, stop_at_layer=max(layers) + 1,
                           on_resid=lambda i, x: store.__setitem__(i, x[0].float().cpu()), logits=None)
        else:
            _, cache = model.run_with_cache(
                tokens, names_filter=[resid_hook_name(x) for x in layers],
                stop_at_layer=max(layers) + 1,
            )
            store = {x: cache[resid_hook_name(x)][0].float().cpu() for x in layers}
    return torch.stack([store[x] for x in layers])
