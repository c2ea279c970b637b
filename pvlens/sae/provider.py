"""Streaming residual-stream activations of one layer, for SAE training and evaluation.

`layer_activations` runs documents through the model (the fast engine, stopped right after
block L) and yields the kept tokens' `blocks.{L}.hook_resid_post` activations with where they
came from. `ActivationProvider` turns that into the endless, shuffled `Iterator[Tensor[B, d_in]]`
sae_lens's trainer consumes.

Which tokens are excluded, and why (measured on SmolLM2-135M-Instruct, layer 15): the first
token of every sequence is an attention sink whose residual norm is ~25 000, about 150x the
median token (~165; the 99th percentile is ~215). This holds whatever the first token is
(`<|im_start|>` or a word). Chat special tokens elsewhere (`<|im_start|>`, `<|im_end|>` in the
middle of a conversation) have ordinary norms (~200) and are kept. Left in, the sink tokens
dominate the squared-error loss: an SAE spends latents reconstructing one constant vector and
its FVU looks good while the ordinary tokens are reconstructed poorly. So position 0 is always
dropped (`skip_first=1`), and as a safety net for other models and layers any token whose norm
exceeds `max_norm_ratio` x the batch median is dropped too (counted in `stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import tl_forward, token_batches
from pvlens.core.batching import left_pad
from pvlens.core.chat import EncodedChat
from pvlens.core.device import as_dtype, fast_dtype
from pvlens.core.engine import engine_for
from pvlens.core.hooks import check_layer
from pvlens.sae.corpus import Document


@dataclass
class ProviderStats:
    """Token accounting of an activation stream."""

    tokens_kept: int = 0
    """Tokens whose activations were yielded."""
    tokens_first: int = 0
    """Tokens dropped because they sit at positions < skip_first (attention sinks)."""
    tokens_outliers: int = 0
    """Tokens dropped because their norm exceeded max_norm_ratio x the batch median."""
    documents: int = 0
    """Documents run through the model."""
    epochs: int = 0
    """Completed passes over the document list."""


@dataclass
class ActivationChunk:
    """Kept activations of one forward batch, with their origin."""

    acts: Float[Tensor, "n d_in"]
    """float32 activations of the kept tokens."""
    doc: Int[Tensor, " n"]
    """Index of each token's document in the list given to `layer_activations`."""
    pos: Int[Tensor, " n"]
    """Position of each token in its document."""


def sae_compute_dtype(model: HookedTransformer, dtype: torch.dtype | str | None) -> torch.dtype:
    """The forward dtype of activation passes: "auto" = bf16 where the hardware runs it fast,
    None = the model's own dtype, else the dtype named."""
    if dtype == "auto":
        return fast_dtype(model.W_E.device)
    return as_dtype(dtype) or model.cfg.dtype


def layer_activations(
    model: HookedTransformer,
    docs: Sequence[Document] | Sequence[Sequence[int]],
    layer: int,
    order: Sequence[int] | None = None,
    dtype: torch.dtype | str = "auto",
    forward_tokens: int = 8192,
    max_batch: int = 64,
    skip_first: int = 1,
    max_norm_ratio: float | None = 10.0,
    stats: ProviderStats | None = None,
) -> Iterator[ActivationChunk]:
    """`blocks.{layer}.hook_resid_post` of every kept token of `docs`, one forward batch at a time.

    Args:
        order: document indices to run, in this order (default: all, in order). Documents are
            batched in consecutive groups of this order (sorted by length inside a group).
        dtype: forward compute dtype ("auto": bf16 where the hardware runs it fast).
        forward_tokens / max_batch: padded tokens and documents per forward pass.
        skip_first: positions 0..skip_first-1 of each document are dropped (attention sinks).
        max_norm_ratio: drop tokens with norm > ratio x the batch's median norm (None: keep all).
    """
    layer = check_layer(model, layer)
    stats = stats if stats is not None else ProviderStats()
    forward = _layer_forward(model, layer, sae_compute_dtype(model, dtype))
    pad_id = model.tokenizer.pad_token_id or 0 if model.tokenizer is not None else 0
    order = list(range(len(docs))) if order is None else list(order)
    ids_of = [d.ids if isinstance(d, Document) else list(d) for d in docs]
    # consecutive windows of the (shuffled) order, each split into length-sorted batches
    window = max(max_batch * 8, 1)
    for w in range(0, len(order), window):
        part = order[w : w + window]
        for group in token_batches([len(ids_of[i]) for i in part], forward_tokens, max_batch):
            idx = [part[j] for j in group]
            tokens, positions = left_pad([EncodedChat(ids_of[i], len(ids_of[i])) for i in idx], pad_id,
                                         model.W_E.device)
            x = forward(tokens, positions)  # [batch, pos, d_in]
            keep = _kept_tokens(x, positions, skip_first, max_norm_ratio, stats)
            rows, cols = keep.nonzero(as_tuple=True)
            stats.tokens_kept += len(rows)
            stats.documents += len(idx)
            yield ActivationChunk(x[rows, cols], torch.tensor(idx)[rows.cpu()], positions[rows, cols].cpu())


def _layer_forward(
    model: HookedTransformer, layer: int, dtype: torch.dtype,
) -> Callable[[Tensor, Tensor], Float[Tensor, "batch pos d_in"]]:
    """A function (tokens, positions) → fp32 `blocks.{layer}.hook_resid_post`, stopping there."""
    engine = engine_for(model, dtype)

    def forward(tokens: Tensor, positions: Tensor) -> Tensor:
        captured: list[Tensor] = []

        def grab(i: int, x: Tensor) -> None:
            if i == layer:
                captured.append(x.float())

        with torch.inference_mode():
            if engine is not None:
                engine.forward(tokens, positions, stop_at_layer=layer + 1, on_resid=grab, logits=None)
            else:
                tl_forward(model, tokens, positions, [layer], grab)
        return captured[0]

    return forward


def _kept_tokens(
    x: Tensor, positions: Tensor, skip_first: int, max_norm_ratio: float | None, stats: ProviderStats,
) -> Tensor:
    """Mask of the tokens to keep: real, past the sink positions, not norm outliers (counted)."""
    real = positions >= 0
    keep = real & (positions >= skip_first)
    stats.tokens_first += int((real & ~keep).sum())
    if max_norm_ratio is not None and bool(keep.any()):
        norms = x.norm(dim=-1)
        outlier = keep & (norms > max_norm_ratio * norms[keep].median())
        stats.tokens_outliers += int(outlier.sum())
        keep &= ~outlier
    return keep


class ActivationProvider:
    """An endless shuffled stream of activation batches `[batch_size, d_in]` for sae_lens.

    Documents are visited in a fresh random order every epoch; their activations go into a
    mixing buffer of `buffer_tokens` rows that is permuted before half of it is served, so a
    batch mixes tokens from many documents (consecutive tokens of one text are correlated).

    With `cache=True` (the default when the corpus's activations fit in `cache_max_bytes` as
    float16) the first epoch's activations are kept, and later epochs reshuffle that cache
    instead of running the model again: on a small corpus trained for several epochs the model
    forward, not the SAE, is the bottleneck (SmolLM2 to layer 16 on one CPU thread: ~250
    tokens/s against ~1000 tokens/s of SAE training).

    `cache_file` (a .safetensors path) keeps that cache on disk: a later provider over the same
    documents, layer and settings loads it instead of running the model at all (the file name
    should carry a key of those; `train_sae` derives one).

    Activations are raw (unscaled): `estimate_scaling_factor` gives the factor sae_lens applies
    and later folds into the SAE's weights.
    """

    def __init__(
        self,
        model: HookedTransformer,
        docs: Sequence[Document],
        layer: int,
        batch_size: int = 4096,
        buffer_tokens: int = 65536,
        seed: int = 0,
        dtype: torch.dtype | str = "auto",
        forward_tokens: int = 8192,
        max_batch: int = 64,
        skip_first: int = 1,
        max_norm_ratio: float | None = 10.0,
        loop: bool = True,
        cache: bool | None = None,
        cache_max_bytes: int = 4 << 30,
        cache_file: str | Path | None = None,
    ):
        if not docs:
            raise ValueError("ActivationProvider needs at least one document")
        if buffer_tokens < 2 * batch_size:
            raise ValueError(
                f"buffer_tokens ({buffer_tokens}) must be at least 2 x batch_size ({batch_size}) "
                "so that every served batch is drawn from a mixed buffer"
            )
        self.model, self.docs, self.layer = model, list(docs), check_layer(model, layer)
        self.batch_size, self.buffer_tokens, self.loop = batch_size, buffer_tokens, loop
        self.kwargs: dict[str, Any] = dict(dtype=dtype, forward_tokens=forward_tokens, max_batch=max_batch,
                           skip_first=skip_first, max_norm_ratio=max_norm_ratio)
        self.d_in = model.cfg.d_model
        fits = sum(len(d) for d in self.docs) * self.d_in * 2 <= cache_max_bytes
        self.cache = fits if cache is None else cache
        self.cache_file = Path(cache_file) if cache_file is not None else None
        if self.cache_file is not None and not self.cache:
            raise ValueError("cache_file needs cache=True (and activations that fit in memory)")
        self.stats = ProviderStats()
        self.generator = torch.Generator().manual_seed(seed)
        self._cached: list[Tensor] = []
        self._pending: list[Tensor] = []
        self._source = self._chunks()
        self._batches = self._stream()

    def __iter__(self) -> ActivationProvider:
        return self

    def __next__(self) -> Float[Tensor, "batch d_in"]:
        return next(self._batches)

    def _chunks(self) -> Iterator[Tensor]:
        """Activation chunks: model passes (first epoch, or always without cache), then the cache."""
        if self.cache_file is not None and self.cache_file.exists():
            self._cached = [load_file(str(self.cache_file))["acts"]]
            self.stats.tokens_kept += self._cached[0].shape[0]
        while not self._cached:
            order = torch.randperm(len(self.docs), generator=self.generator).tolist()
            for chunk in layer_activations(self.model, self.docs, self.layer, order=order,
                                           stats=self.stats, **self.kwargs):
                if self.cache:
                    self._cached.append(chunk.acts.half())
                yield chunk.acts
            self.stats.epochs += 1
            if not self.loop:
                return
            if self.cache:
                break
        cached = torch.cat(self._cached)
        self._cached = [cached]
        if self.cache_file is not None and not self.cache_file.exists():
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_name(self.cache_file.name + ".tmp")
            save_file({"acts": cached.contiguous()}, str(tmp))
            tmp.replace(self.cache_file)
        while True:
            perm = torch.randperm(cached.shape[0], generator=self.generator).to(cached.device)
            for idx in perm.split(self.buffer_tokens // 2):
                yield cached[idx].float()
            self.stats.epochs += 1

    def _next_chunk(self) -> Tensor:
        return self._pending.pop(0) if self._pending else next(self._source)

    def _stream(self) -> Iterator[Tensor]:
        buffer: Tensor | None = None
        half = self.buffer_tokens // 2
        while True:
            try:
                acts = self._next_chunk()
            except StopIteration:
                break
            buffer = acts if buffer is None else torch.cat([buffer, acts])
            if buffer.shape[0] < self.buffer_tokens:
                continue
            buffer = buffer[torch.randperm(buffer.shape[0], generator=self.generator).to(buffer.device)]
            n_serve = (buffer.shape[0] - half) // self.batch_size * self.batch_size
            serve, buffer = buffer[:n_serve], buffer[n_serve:]
            yield from serve.split(self.batch_size)
        if buffer is not None:  # finite stream (loop=False): serve what is left, shuffled
            buffer = buffer[torch.randperm(buffer.shape[0], generator=self.generator).to(buffer.device)]
            for batch in buffer.split(self.batch_size):
                if batch.shape[0] == self.batch_size:
                    yield batch

    @torch.no_grad()
    def estimate_scaling_factor(self, n_tokens: int = 65536) -> float:
        """sqrt(d_in) / mean ‖x‖ over the stream's next ~`n_tokens` tokens (sae_lens's rule).

        The tokens it reads are kept and served to training afterwards, so the estimate costs
        no extra model passes.
        """
        total, count = 0.0, 0
        while count < n_tokens:
            try:
                acts = next(self._source)
            except StopIteration:
                break
            self._pending.append(acts)
            total += acts.norm(dim=-1).double().sum().item()
            count += acts.shape[0]
        count_pending = sum(a.shape[0] for a in self._pending)
        if count == 0 and count_pending == 0:
            raise ValueError("no tokens left after exclusions; are the documents 1 token long?")
        if count == 0:  # everything already pending (called twice)
            total = sum(a.norm(dim=-1).double().sum().item() for a in self._pending)
            count = count_pending
        return float(self.d_in**0.5 / (total / count))
