"""A lean forward pass over a HookedTransformer's own weights, for bulk work.

TransformerLens's forward re-arranges every attention weight on every call and builds
attention from explicit einsums; for token-by-token generation and bulk activation passes
that makes it several times slower than Hugging Face. This engine runs the same maths for
Llama-family models (RMSNorm, rotary, grouped-query attention, gated MLP: Llama, Qwen2,
Mistral) from weights packed once, with a preallocated KV cache and SDPA attention (decoding
on CPU in fp32: two batched matmuls, and for bulk runs an MKL-prepacked unembedding; in bf16:
weights reordered once for oneDNN).

It is not a second model: it reads the HookedTransformer's parameters, and it calls the
model's own `hook_embed`, `blocks.{l}.hook_resid_pre/mid/post` HookPoints, so hooks that
users or pvlens attach there (steering, ablation, caching) fire as they do in TransformerLens.
When a hook sits anywhere else, or the architecture is not covered, callers fall back to the
TransformerLens forward (`engine_for` returns None). Agreement with TransformerLens is tested.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.components import TransformerBlock

from pvlens.core.device import cpu_has_amx
from pvlens.core.fingerprint import weights_version

SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"}
# CPU matmul shapes (measured with MKL, fp32, 8 rows per decoding step): `x @ W` with a fused
# [576, 3072] gate/up weight runs ~1.35x slower than two [576, 1536] products, and with the
# whole [576, 49152] unembedding ~1.6x slower than in column blocks of 3072; at 1 row they tie.
# So gate and up stay separate, and on CPU the unembedding is split into column blocks.
UNEMBED_CHUNK = 3072
# bf16 (and fp16) on CPU is the other way round: one-row decoding is memory-bound, and there
# `F.linear` over a contiguous [out, in] weight streams it ~1.4x faster than `x @ W` over
# [in, out] (batch-1 Qwen2.5-0.5B, one thread, AMX Xeon: MLP products 1.6 vs 2.3 ms, the whole
# [151936, 896] unembedding 47 ms vs 76 ms in 3072-column blocks), and on par at batch 64.
# So reduced precision on CPU packs every weight as [out, in] and the unembedding unsplit.
# In bf16 those [out, in] weights are further reordered once into oneDNN's blocked layout
# (`torch.ops.mkldnn._reorder_linear_weight`, what inductor's weight freezing uses), so no
# product re-lays its weight out per call; results are bit-identical to `F.linear`. On an
# Intel Xeon with AMX, one thread, 90 [1536, 576] products: 1.55x faster at 1 row, 1.4x at
# 96 rows, 1.15x at 1000 rows; the [49152, 576] unembedding at 96 rows 10.7 vs 15.1 ms.
MKLDNN_PACK_ROWS = 512
"""The row count oneDNN's bf16 weight reorder is tuned for (1-1000 rows all run faster)."""
ENGINE_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")

ResidCallback = Callable[[int, Float[Tensor, "batch pos d_model"]], None]


def unsupported_reason(model: HookedTransformer) -> str | None:
    """Why the fast engine cannot run this model as it is now (None if it can)."""
    cfg = model.cfg
    if cfg.original_architecture not in SUPPORTED_ARCHITECTURES:
        return f"architecture {cfg.original_architecture!r} is not covered by the fast engine"
    checks = {
        "RMS normalisation": cfg.normalization_type in ("RMS", "RMSPre"),
        "rotary positions": cfg.positional_embedding_type == "rotary",
        "gated MLP": cfg.gated_mlp,
        "silu": cfg.act_fn == "silu",
        "no qk-norm": not getattr(cfg, "use_qk_norm", False),
        "no attention soft-capping": not getattr(cfg, "attn_scores_soft_cap", -1) > 0,
        "no NTK rope rescaling at run time": not getattr(cfg, "use_dynamic_ntk_rope", False),
        "unmodified attention scale": not cfg.scale_attn_by_inverse_layer_idx,
        "no sliding window shorter than the context": not (
            cfg.use_local_attn and (cfg.window_size or 0) < cfg.n_ctx
        ),
        "one device (n_devices=1)": cfg.n_devices == 1,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        return f"fast engine needs {', '.join(failed)}"
    for name, hp in model.hook_dict.items():
        if (hp._forward_hooks or hp._backward_hooks) and not _engine_hook(name):
            return f"a hook is attached at {name}, which only the TransformerLens forward calls"
    return None


def _engine_hook(name: str) -> bool:
    return name == "hook_embed" or (name.startswith("blocks.") and name.endswith(ENGINE_HOOKS))


@dataclass
class KVCache:
    """Preallocated keys/values for every layer; slot `s` of row `b` holds position `pos[b, s]`."""

    k: list[Tensor]
    """Per layer [batch, n_kv_heads, max_len, d_head]."""
    v: list[Tensor]
    """Per layer [batch, n_kv_heads, max_len, d_head]."""
    positions: Int[Tensor, "batch max_len"]
    """Position index of each filled slot; -1 for padding or unfilled slots."""
    length: int = 0
    """Number of slots filled so far (shared by all rows; unused in slot mode)."""
    lengths: Int[Tensor, " batch"] | None = None
    """Slot mode (continuous batching): slots filled per row, each row at its own length.
    A forward then takes one token per row and writes it at the row's own length. Every slot
    must hold finite values (`slot_mode()` zeroes them): bf16/fp16 decoding may read all of
    them, masked to weight 0, and 0 x NaN is NaN."""

    @property
    def batch(self) -> int:
        return int(self.positions.shape[0])

    def slot_mode(self) -> KVCache:
        """Switch to per-row lengths (every row empty); returns self. Keys/values are zeroed:
        a short row attends (masked) over slots it never wrote, and 0 x NaN garbage is NaN."""
        for t in (*self.k, *self.v):
            t.zero_()
        self.lengths = torch.zeros(self.batch, dtype=torch.long, device=self.positions.device)
        self.positions.fill_(-1)
        return self

    def load_rows(
        self, slots: Sequence[int], prefill: KVCache, source: Sequence[int] | None = None
    ) -> None:
        """Reset `slots` and fill slot `slots[j]` with row `source[j]` of `prefill` (a cache of
        those prompts; default: row j), so one prefilled prompt can seed several slots.

        Each row's filled columns (position >= 0) are packed to the front in order, dropping
        the padding a batched prefill left in it, so the slot's length is its prompt's own
        length and decoding attends over no padding of its batch-mates."""
        if self.lengths is None:
            raise ValueError("load_rows needs a cache in slot mode (KVCache.slot_mode())")
        dev = self.positions.device
        idx = torch.as_tensor(list(slots), dtype=torch.long, device=dev)
        src = torch.as_tensor(list(range(len(slots)) if source is None else source),
                              dtype=torch.long, device=dev)
        if src.shape != idx.shape:
            raise ValueError(f"load_rows got {len(src)} source rows for {len(idx)} slots")
        pos = prefill.positions[src, : prefill.length]
        valid = pos >= 0
        n_valid = valid.sum(1)
        width = int(n_valid.max()) if len(src) else 0
        # stable sort of "is padding": the filled columns first, in their order
        cols = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)[:, :width]
        gather = cols[:, None, :, None].expand(-1, self.k[0].shape[1], -1, self.k[0].shape[3])
        for mine, theirs in zip((*self.k, *self.v), (*prefill.k, *prefill.v), strict=True):
            mine[idx, :, :width] = torch.gather(theirs.index_select(0, src), 2, gather)
        packed = torch.gather(pos, 1, cols)
        packed[torch.arange(width, device=dev)[None] >= n_valid[:, None]] = -1
        self.positions[idx] = -1
        self.positions[idx, :width] = packed
        self.lengths[idx] = n_valid

    @staticmethod
    def gather(sources: Sequence[tuple[KVCache, int]], max_len: int) -> KVCache:
        """A new cache (not slot mode) whose row j copies row `r` of cache `c` for
        `sources[j] = (c, r)`: prefixes computed once, each continued by several prompts.
        Sources may differ in length; shorter rows are padded (position -1, zero keys/values)
        up to the longest, which becomes the new cache's length."""
        if any(c.lengths is not None for c, _ in sources):
            raise ValueError("gather copies prefill caches, not slot-mode ones")
        length = max(c.length for c, _ in sources)
        if max_len < length:
            raise ValueError(f"max_len {max_len} is shorter than the longest source ({length})")
        first = sources[0][0]
        dev = first.positions.device
        k = [t.new_zeros((len(sources), t.shape[1], max_len, t.shape[3])) for t in first.k]
        v = [t.new_zeros((len(sources), t.shape[1], max_len, t.shape[3])) for t in first.v]
        positions = first.positions.new_full((len(sources), max_len), -1)
        by_cache: dict[int, tuple[KVCache, list[int], list[int]]] = {}
        for j, (c, r) in enumerate(sources):
            by_cache.setdefault(id(c), (c, [], []))[1].append(j)
            by_cache[id(c)][2].append(r)
        for c, dst, src in by_cache.values():
            n, d = c.length, torch.tensor(dst, device=dev)
            s = torch.tensor(src, device=dev)
            for mine, theirs in zip((*k, *v), (*c.k, *c.v), strict=True):
                mine[d, :, :n] = theirs.index_select(0, s)[:, :, :n]
            positions[d, :n] = c.positions.index_select(0, s)[:, :n]
        return KVCache(k=k, v=v, positions=positions, length=length)

    def select(self, slots: Sequence[int]) -> KVCache:
        """A smaller slot-mode cache holding only `slots` (in that order), cut to their length."""
        if self.lengths is None:
            raise ValueError("select needs a cache in slot mode (KVCache.slot_mode())")
        idx = torch.as_tensor(list(slots), dtype=torch.long, device=self.positions.device)
        return KVCache(
            k=[t[idx] for t in self.k], v=[t[idx] for t in self.v],
            positions=self.positions[idx], lengths=self.lengths[idx],
        )

    def rewind(self, length: int) -> None:
        """Forget every slot from `length` on, so the next forward continues from there
        (e.g. two different replies to one cached prompt)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot rewind a cache of length {self.length} to {length}")
        self.length = length
        self.positions[:, length:] = -1

    def reset_rows(self, slots: Sequence[int]) -> None:
        """Empty `slots` (slot mode), e.g. when their conversations finished."""
        if self.lengths is None:
            raise ValueError("reset_rows needs a cache in slot mode (KVCache.slot_mode())")
        idx = torch.as_tensor(list(slots), dtype=torch.long, device=self.positions.device)
        self.positions[idx] = -1
        self.lengths[idx] = 0


class FastEngine:
    """Packed weights of one HookedTransformer in one compute dtype."""

    def __init__(self, model: HookedTransformer, dtype: torch.dtype):
        self.model, self.dtype = model, dtype
        cfg = model.cfg
        self.n_heads = cfg.n_heads
        self.n_kv = cfg.n_key_value_heads or cfg.n_heads
        self.d_head = cfg.d_head
        self.rotary_dim = cfg.rotary_dim or cfg.d_head
        self.eps = cfg.eps
        self.device = model.W_E.device
        self.version = weights_version(model)
        """The weights' version this engine was packed from (`weights_version`)."""
        self.out_in = self.device.type == "cpu" and dtype != torch.float32
        """Weights packed as [out, in] and applied with `F.linear` (see UNEMBED_CHUNK);
        otherwise [in, out], applied as `x @ W`."""
        self.mkldnn = self.out_in and dtype == torch.bfloat16 and mkldnn_bf16_packing()
        """[out, in] weights further reordered for oneDNN's bf16 kernels (see MKLDNN_PACK_ROWS)."""
        self.sdpa_decode = self.out_in and cpu_has_amx()
        """CPU decoding in bf16/fp16 through SDPA (AMX CPUs) instead of two batched matmuls
        (see `_attention`: which is faster depends on the CPU)."""
        with torch.no_grad():
            self.layers = [self._pack_block(b) for b in model.blocks]
            ln_final: Any = model.ln_final
            self.ln_final = ln_final.w.detach().float()
            W_U = model.unembed.W_U.detach().to(dtype)
            if self.out_in:
                self.W_U = [self._reorder(W_U.t().contiguous())]
            else:
                step = UNEMBED_CHUNK if self.device.type == "cpu" else W_U.shape[1]
                self.W_U = [W_U[:, i : i + step].contiguous() for i in range(0, W_U.shape[1], step)]
            self._packed_unembed: tuple[int, Tensor, Tensor] | None = None
            b_U = model.unembed.b_U.detach()
            self.b_U = b_U.to(dtype) if b_U.abs().max() > 0 else None
            attn0: Any = model.blocks[0].attn
            self.cos = attn0.rotary_cos.detach().float()
            sin = attn0.rotary_sin.detach().float()
            half = self.rotary_dim // 2
            # rotate_half(x) * sin == roll(x, half) * [-sin_lo, sin_hi] (GPT-NeoX style): one
            # roll instead of two slices, a negation and a concatenation per tensor
            self.sin_signed = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
            self.scale = 1.0 / float(attn0.attn_scale)

    def _pack_block(self, block: TransformerBlock) -> dict[str, Tensor | None]:
        attn: Any = block.attn  # TL attention/MLP: weights by attribute name
        mlp: Any = block.mlp
        dt = self.dtype

        def flat(w: Tensor) -> Tensor:
            return rearrange(w.detach(), "n m h -> m (n h)")

        w_k = attn._W_K if hasattr(attn, "_W_K") else attn.W_K
        w_v = attn._W_V if hasattr(attn, "_W_V") else attn.W_V
        b_k = attn._b_K if hasattr(attn, "_b_K") else attn.b_K
        b_v = attn._b_V if hasattr(attn, "_b_V") else attn.b_V

        def pack(w: Tensor) -> Tensor:  # w: [in, out]
            return self._reorder((w.t() if self.out_in else w).to(dt).contiguous())

        w_qkv = torch.cat([flat(attn.W_Q), flat(w_k), flat(w_v)], dim=1)
        b_qkv = torch.cat([attn.b_Q.detach().reshape(-1), b_k.detach().reshape(-1), b_v.detach().reshape(-1)])
        return {
            "ln1": cast(Tensor, cast(Any, block.ln1).w).detach().float(),
            "ln2": cast(Tensor, cast(Any, block.ln2).w).detach().float(),
            "w_qkv": pack(w_qkv),
            "b_qkv": b_qkv.to(dt) if b_qkv.abs().max() > 0 else None,
            "w_o": pack(rearrange(attn.W_O.detach(), "n h m -> (n h) m")),
            "b_o": attn.b_O.detach().to(dt) if attn.b_O.abs().max() > 0 else None,
            "w_gate": pack(mlp.W_gate.detach()),
            "w_up": pack(mlp.W_in.detach()),
            "b_in": mlp.b_in.detach().to(dt) if mlp.b_in.abs().max() > 0 else None,
            "w_down": pack(mlp.W_out.detach()),
            "b_out": mlp.b_out.detach().to(dt) if mlp.b_out.abs().max() > 0 else None,
        }

    def _reorder(self, w: Tensor) -> Tensor:
        """An [out, in] bf16 weight in oneDNN's blocked layout when `mkldnn`, else `w`."""
        return onednn_pack(w) if self.mkldnn else w

    # --- pieces ----------------------------------------------------------------------------
    def _linear(self, x: Tensor, w: Tensor | None, b: Tensor | None = None) -> Tensor:
        """x times a packed weight (layout per `out_in`/`mkldnn`), plus the bias if any."""
        assert w is not None
        if self.mkldnn:
            return onednn_linear(x, w, b)
        if self.out_in:
            return F.linear(x, w, b)
        out = x @ w
        return out if b is None else out + b

    def _rms(self, x: Tensor, w: Tensor) -> Tensor:
        x = x.float()
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w).to(self.dtype)

    def _rotary(self, x: Tensor, cos: Tensor, sin_signed: Tensor) -> Tensor:
        """x: [batch, pos, heads, d_head]; cos/sin_signed: [batch, pos, 1, rotary_dim]
        (GPT-NeoX style; `sin_signed` as built in __init__)."""
        rd = self.rotary_dim
        x_rot = x[..., :rd].float() if rd < x.shape[-1] else x.float()
        out = (x_rot * cos + torch.roll(x_rot, rd // 2, dims=-1) * sin_signed).to(x.dtype)
        return torch.cat([out, x[..., rd:]], dim=-1) if rd < x.shape[-1] else out

    def new_cache(self, batch: int, max_len: int, n_layers: int | None = None) -> KVCache:
        """An empty cache for `batch` rows of up to `max_len` positions; `n_layers` < all keeps
        only the first blocks (for forwards that stop early, `stop_at_layer`)."""
        shape = (batch, self.n_kv, max_len, self.d_head)
        n = len(self.layers) if n_layers is None else n_layers
        return KVCache(
            k=[torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(n)],
            v=[torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(n)],
            positions=torch.full((batch, max_len), -1, dtype=torch.long, device=self.device),
        )

    def pack_unembed(self, rows: int | None) -> bool:
        """Prepack the unembedding for forwards of exactly `rows` rows (bulk decoding), where
        MKL's packed GEMM can run it: CPU, fp32, an MKL build (`None` drops the packing).
        Packing costs one reorder (~0.1 s, and ~2x the unembedding's memory until dropped);
        on this CPU the [96, 576] x [576, 49152] product then runs ~1.3x faster, with the
        same results (MKL's own kernels either way). Returns whether the packed path is on."""
        if self._packed_unembed is not None and self._packed_unembed[0] == rows:
            return True
        self._packed_unembed = None  # drop the old packing before making a new one
        if rows is None or self.device.type != "cpu" or self.dtype != torch.float32:
            return False
        weight = self.model.unembed.W_U.detach().float().t()  # [vocab, d_model], a view if fp32
        packed = mkl_pack(weight.contiguous(), rows)
        if packed is None:
            return False
        self._packed_unembed = (rows, packed, weight)
        return True

    # --- forward ---------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        positions: Int[Tensor, "batch pos"],
        cache: KVCache | None = None,
        stop_at_layer: int | None = None,
        on_resid: ResidCallback | None = None,
        logits: str | None = "last",
        float_logits: bool = True,
    ) -> Float[Tensor, "batch vocab"] | Float[Tensor, "batch pos vocab"] | None:
        """Run the blocks on `tokens` (their own-sequence `positions`, -1 = padding).

        With a cache, keys/values are appended to it and queries see every filled slot.
        `on_resid(l, x)` receives each block's hooked output (fp32). `logits` is "last",
        "all" or None (skip the unembedding); they are fp32, or in the compute dtype with
        `float_logits=False` (for sampling: the conversion is exact, so the picks are the
        same, and in bf16 at batch 96 it saves a 19 MB copy per decoding step).
        """
        pos_idx = positions.clamp(min=0)
        slots = cache is not None and cache.lengths is not None
        if slots and tokens.shape[1] != 1:
            raise ValueError("a slot-mode cache takes one token per row per forward")
        mask = _slot_mask(positions, cache) if slots else _attention_mask(positions, cache)
        step = _Step(
            cos=self.cos[pos_idx][:, :, None],  # [batch, pos, 1, rotary_dim]
            sin_signed=self.sin_signed[pos_idx][:, :, None],
            mask=mask,
            cache=cache,
            start=cache.length if cache is not None else 0,
            write_at=_flat_slots(cache, self.n_kv) if slots and cache is not None else None,
            additive=_additive(mask, self.dtype) if tokens.shape[1] == 1 and self.device.type == "cpu" else None,
        )
        if slots and cache is not None and step.additive is not None and self._reads_full_cache(cache, mask):
            step.full_cache = True
            step.additive = F.pad(step.additive, (0, cache.positions.shape[1] - mask.shape[-1]), value=float("-inf"))
        resid = self.model.hook_embed(self.model.embed.W_E[tokens]).float()
        n_layers = len(self.layers) if stop_at_layer is None else stop_at_layer
        for i in range(n_layers):
            resid = self._block(i, resid, step)
            if on_resid is not None:
                on_resid(i, resid)
        if step.write_at is not None and cache is not None and cache.lengths is not None:
            cache.lengths += (positions[:, 0] >= 0).long()  # idle rows rewrite their slot
        elif cache is not None:
            cache.length += tokens.shape[1]
        if logits is None or stop_at_layer is not None:
            return None
        return self._unembed(resid[:, -1:] if logits == "last" else resid, logits == "last", float_logits)

    def _reads_full_cache(self, cache: KVCache, mask: Tensor) -> bool:
        """Whether a CPU decoding step over a slot-mode cache reads all of it (see `_attention`):
        bf16/fp16 without SDPA, when the keys it attends over fill at least half the cache.
        (Slot-mode caches start zeroed, so slots no row has written hold no NaN garbage.)"""
        return (not self.sdpa_decode and self.dtype != torch.float32
                and 2 * mask.shape[-1] >= cache.positions.shape[1])

    def _block(self, i: int, resid: Tensor, step: _Step) -> Tensor:
        """Block `i` with the model's resid_pre/mid/post hook points around its two halves."""
        block, p = self.model.blocks[i], self.layers[i]
        resid = block.hook_resid_pre(resid)
        attn_out = self._attention(i, self._rms(resid, p["ln1"]), step)
        resid = block.hook_resid_mid(resid + attn_out.float())
        mlp_out = self._mlp(p, self._rms(resid, p["ln2"]))
        return block.hook_resid_post(resid + mlp_out.float())

    def _attention(self, i: int, h: Tensor, step: _Step) -> Tensor:
        """Grouped-query self-attention of block `i` (appending keys/values to the cache)."""
        p, seq = self.layers[i], h.shape[1]
        qkv = self._linear(h, p["w_qkv"], p["b_qkv"])
        nq, nkv, dh = self.n_heads * self.d_head, self.n_kv * self.d_head, self.d_head
        # rotary on the query and key heads together, before they are split
        qk = self._rotary(rearrange(qkv[..., : nq + nkv], "b s (n h) -> b s n h", h=dh), step.cos, step.sin_signed)
        q = rearrange(qk[:, :, : self.n_heads], "b s n h -> b n s h")
        k = rearrange(qk[:, :, self.n_heads :], "b s n h -> b n s h")
        v = rearrange(qkv[..., nq + nkv :], "b s (n h) -> b n s h", h=dh)
        if step.cache is not None and step.write_at is not None:
            # one index_copy_ per tensor into the flat [rows * kv heads * slots, d_head] view
            step.cache.k[i].view(-1, dh).index_copy_(0, step.write_at, k.reshape(-1, dh))
            step.cache.v[i].view(-1, dh).index_copy_(0, step.write_at, v.reshape(-1, dh))
            k, v = step.cache.k[i][:, :, : step.end], step.cache.v[i][:, :, : step.end]
        elif step.cache is not None:
            end = step.start + seq
            step.cache.k[i][:, :, step.start : end] = k
            step.cache.v[i][:, :, step.start : end] = v
            k, v = step.cache.k[i][:, :, :end], step.cache.v[i][:, :, :end]
        group = self.n_heads // self.n_kv
        if step.additive is not None and not self.sdpa_decode:
            # Decoding on CPU in fp32, and in bf16/fp16 without AMX: the query heads of one
            # key/value head as one [group, d_head] block, attention as two batched matmuls
            # around a softmax (keys/values read once per kv head, never expanded; the mask added
            # once per step, not converted per layer): AMD EPYC, fp32, batch 96, 1.3x faster
            # than SDPA.
            qg = rearrange(q, "b (k g) s h -> b k (g s) h", g=group)
            if self.dtype == torch.float32:
                scores = torch.matmul(qg, k.transpose(-1, -2)).mul_(self.scale).add_(step.additive)
                z = torch.matmul(torch.softmax(scores, dim=-1), v)
            else:
                # In bf16/fp16 the products over a strided cache slice run slower than over a
                # contiguous copy of it (AMD EPYC, avx512-bf16), so they read the whole
                # contiguous cache when the step needs at least half of it (its masked slots
                # weigh 0; `full_cache`), else a contiguous copy of the slice. q is scaled
                # before the product (so fp16 scores overflow only if the scaled ones would;
                # exact when the scale is a power of two, one more rounding of q otherwise),
                # the scores are rounded to the compute dtype by the product, then masked and
                # softmaxed in fp32. On that CPU (no AMX; batch 96, 9 query / 3 kv heads, 72
                # keys) the copy path took 1.3 ms per layer against 7.8 ms for SDPA with
                # `enable_gqa`.
                if step.full_cache and step.cache is not None:
                    k, v = step.cache.k[i], step.cache.v[i]
                else:
                    k, v = k.contiguous(), v.contiguous()
                scores = torch.matmul(qg * self.scale, k.transpose(-1, -2)).float().add_(step.additive)
                z = torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)
            return self._linear(rearrange(z, "b k (g s) h -> b s (k g h)", g=group), p["w_o"], p["b_o"])
        if seq == 1 and group > 1 and step.additive is None:
            # Decoding off the CPU (no additive mask): the query heads of one key/value head
            # attend as one [group, d_head] block, so keys/values are read once per kv head and
            # never expanded (measured on a CPU, fp32 and bf16: 1.1-1.6x faster than enable_gqa
            # at batch 64-80).
            z = F.scaled_dot_product_attention(
                rearrange(q, "b (k g) s h -> b k (g s) h", g=group), k, v,
                attn_mask=step.mask, scale=self.scale,
            )
            return self._linear(rearrange(z, "b k (g s) h -> b s (k g h)", g=group), p["w_o"], p["b_o"])
        # Prefill, and decoding on CPU in bf16/fp16 with AMX (the additive mask): SDPA with
        # grouped heads there takes 1.0 ms per layer against 2.0 ms for the two matmuls above
        # (Intel Xeon with AMX, batch 96, ~110 slots); fp32 SDPA there is 6.8 ms, so fp32 keeps
        # the matmuls.
        mask = step.additive if step.additive is not None else step.mask
        z = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=group > 1
        )
        return self._linear(rearrange(z, "b n s h -> b s (n h)"), p["w_o"], p["b_o"])

    def _mlp(self, p: dict[str, Tensor | None], h: Tensor) -> Tensor:
        """Gated (SiLU) MLP."""
        act = F.silu(self._linear(h, p["w_gate"]), inplace=True).mul_(self._linear(h, p["w_up"]))
        if p["b_in"] is not None:
            act = act + p["b_in"]
        return self._linear(act, p["w_down"], p["b_out"])

    def _unembed(self, resid: Tensor, last: bool, float_logits: bool = True) -> Tensor:
        """Final norm and unembedding (in column blocks on CPU in fp32), as fp32 logits unless
        `float_logits` is False."""
        h = self._rms(resid, self.ln_final)
        packed = self._packed_unembed
        if packed is not None and h.shape[0] * h.shape[1] == packed[0]:
            out = mkl_linear(h, packed[1], packed[2], packed[0])
        elif len(self.W_U) > 1:
            out = torch.cat([h @ w for w in self.W_U], dim=-1)
        else:
            out = self._linear(h, self.W_U[0])
        if self.b_U is not None:
            out = out + self.b_U
        out = out[:, -1] if last else out
        return out.float() if float_logits else out


@dataclass
class _Step:
    """What every block of one forward shares: rotary tables, attention mask, cache slot."""

    cos: Tensor
    sin_signed: Tensor
    mask: Tensor
    cache: KVCache | None
    start: int
    write_at: Tensor | None = None
    """Slot mode: where each row's key/value heads go in a layer's flat cache view
    ([batch * n_kv_heads * max_len, d_head]), row-major over (row, kv head)."""
    additive: Tensor | None = None
    """One-token forwards on CPU: the mask as 0 / -inf in the compute dtype, [batch, 1, 1, k]."""
    full_cache: bool = False
    """Decoding attends over every slot of the cache (`additive` then covers all of them)."""

    @property
    def end(self) -> int:
        """Slot mode: keys to attend over (the longest row, after this token)."""
        return self.mask.shape[-1]


def _attention_mask(positions: Tensor, cache: KVCache | None) -> Tensor:
    """[batch, 1, q, k]: query q may see key s iff s is a real token at or before q.

    With a cache the new positions are recorded in it and the keys are every filled slot.
    Padding queries are pointed at every real key so their (ignored) rows never become NaN.
    """
    if cache is not None:
        start, seq = cache.length, positions.shape[1]
        cache.positions[:, start : start + seq] = positions
        key_pos = cache.positions[:, : start + seq]
    else:
        key_pos = positions
    q_pos = torch.where(positions >= 0, positions, torch.full_like(positions, 1 << 30))
    mask = (key_pos[:, None, :] >= 0) & (key_pos[:, None, :] <= q_pos[:, :, None])
    return mask[:, None]


def _slot_mask(positions: Tensor, cache: KVCache) -> Tensor:
    """[batch, 1, 1, k] for one token per row written at the row's own length (slot mode).

    An idle row (position -1) sees its slot 0, so its ignored output never becomes NaN.
    """
    assert cache.lengths is not None
    rows = torch.arange(positions.shape[0], device=positions.device)
    cache.positions[rows, cache.lengths] = positions[:, 0]
    end = int(cache.lengths.max()) + 1
    key_pos = cache.positions[:, :end]
    q_pos = positions[:, :1]
    mask = (key_pos >= 0) & (key_pos <= q_pos)
    mask[:, 0] |= q_pos[:, 0] < 0
    return mask[:, None, None]


def _flat_slots(cache: KVCache, n_kv: int) -> Tensor:
    """Slot mode: each (row, kv head)'s write index in a layer's flat cache view, for the
    token every row writes at its own length. (Caches are made contiguous; the flat `view`
    in `_attention` would refuse one that is not.)"""
    assert cache.lengths is not None
    max_len = cache.positions.shape[1]
    rows = torch.arange(cache.batch, device=cache.lengths.device)
    heads = torch.arange(n_kv, device=rows.device)
    return ((rows[:, None] * n_kv + heads[None]) * max_len + cache.lengths[:, None]).reshape(-1)


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean attention mask as an additive one (0 where allowed, -inf elsewhere)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def onednn_pack(w: Float[Tensor, "out d_in"]) -> Tensor:
    """An [out, in] bf16 weight reordered once into oneDNN's blocked layout (an opaque
    tensor for `onednn_linear` only; see MKLDNN_PACK_ROWS)."""
    return torch.ops.mkldnn._reorder_linear_weight(w, MKLDNN_PACK_ROWS)


def onednn_linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """`F.linear(x, W, b)` for a weight from `onednn_pack` (the kernel reads x as contiguous
    rows, so a strided x is copied first)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w, b, "none", [], "")


def mkl_pack(w: Float[Tensor, "out d_in"], rows: int) -> Tensor | None:
    """An [out, in] fp32 weight prepacked by MKL for products of exactly `rows` rows (an
    opaque tensor for `mkl_linear` only), or None on a build without MKL's packed GEMM."""
    if not torch._C.has_mkl:
        return None
    try:
        return torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
    except (AttributeError, RuntimeError):
        return None


def mkl_linear(x: Tensor, packed: Tensor, w: Float[Tensor, "out d_in"], rows: int) -> Tensor:
    """`F.linear(x, w)` through `packed = mkl_pack(w, rows)` (x has `rows` rows; MKL reads `w`
    itself only for its shape)."""
    return torch.ops.mkl._mkl_linear(x, packed, w, None, rows)


@functools.cache
def mkldnn_bf16_packing() -> bool:
    """Whether this PyTorch build and CPU can run oneDNN's prepacked bf16 linear (it needs
    AVX512-BW/VL/DQ or AVX-NE-CONVERT; on other CPUs the reorder raises)."""
    try:
        out = onednn_linear(torch.ones(1, 8, dtype=torch.bfloat16),
                            onednn_pack(torch.ones(8, 8, dtype=torch.bfloat16)))
    except (AttributeError, RuntimeError):
        return False
    return bool((out == 8).all())


def engine_for(model: HookedTransformer, dtype: torch.dtype | None = None) -> FastEngine | None:
    """The model's fast engine in `dtype` (packed once, repacked if the weights changed), or
    None when the TransformerLens forward must be used (see `unsupported_reason`)."""
    if unsupported_reason(model) is not None:
        return None
    dtype = dtype or model.cfg.dtype
    cache: dict = model.__dict__.setdefault("_pvlens_engines", {})
    engine = cache.get(dtype)
    # weights_version covers parametrized (LoRA) weights through their originals, A/B and
    # switches, so an adapted model is packed once per weight change, not once per call.
    if engine is None or engine.version != weights_version(model):
        cache.clear()  # keep at most one packed copy of the weights
        engine = cache[dtype] = FastEngine(model, dtype)
    return engine
