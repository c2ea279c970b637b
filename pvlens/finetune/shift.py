"""Finetuning shift (paper §5): how far finetuning moved the model along a persona direction.

shift_l = mean over evaluation prompts of the last-prompt-token activation at block l,
finetuned minus base, projected onto the unit persona vector of layer l. The paper finds it
predicts how strongly the finetuned model expresses the trait (r ≈ 0.76–0.97 across datasets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.core.generation import to_chats
from pvlens.finetune.lora import LoraHandle, get_handle
from pvlens.finetune.vectors import as_table, unit


@dataclass
class ShiftResult:
    """Per-layer finetuning shift."""

    layers: list[int]
    """Block indices (pvlens convention: output of block l)."""
    projection: Float[Tensor, " n_layers"]
    """(mean finetuned − mean base) · v̂_l: the paper's finetuning shift."""
    base_projection: Float[Tensor, " n_layers"]
    """Mean projection of the base model's last-prompt activations on v̂_l."""
    finetuned_projection: Float[Tensor, " n_layers"]
    """Mean projection of the finetuned model's last-prompt activations on v̂_l."""
    mean_shift: Float[Tensor, "n_layers d_model"]
    """The full mean activation difference (finetuned − base)."""

    def at(self, layer: int) -> float:
        return float(self.projection[self.layers.index(layer)])

    def as_dict(self) -> dict:
        return {"layers": self.layers, "projection": self.projection.tolist(),
                "base_projection": self.base_projection.tolist(),
                "finetuned_projection": self.finetuned_projection.tolist()}


def finetuning_shift(
    model: HookedTransformer,
    prompts,
    vectors,
    base: HookedTransformer | LoraHandle | None = None,
    layers: Sequence[int] | None = None,
    system: str | None = None,
    batch_size: int = 32,
    dtype: torch.dtype | str | None = torch.float32,
    progress: bool = False,
) -> ShiftResult:
    """Finetuning shift of `model` relative to its base, per layer.

    Args:
        model: the finetuned model (e.g. with a pvlens LoRA adapter, or a separately loaded one).
        prompts: evaluation questions (strings, message lists or EncodedChat prompts).
        vectors: persona vectors (PersonaVectors, [n_layers, d_model] tensor or {layer: vec}).
        base: the base model, or None / the adapter handle to use `model` with its pvlens
            adapter switched off.
        dtype: compute dtype; fp32 by default since the shift is a small difference of means.
    """
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(x) % n_layers for x in layers]
    units = unit(as_table(vectors, n_layers, model.cfg.d_model)[layers])  # [n_layers, d_model]
    chats = to_chats(model, prompts, system)
    if not chats:
        raise ValueError("finetuning_shift needs at least one evaluation prompt")

    def mean_last(m: HookedTransformer) -> Tensor:
        acts = collect(m, chats, reductions=("last_prompt",), layers=layers,
                       batch_size=batch_size, dtype=dtype, progress=progress)["last_prompt"]
        return acts.double().mean(0)  # [n_layers, d_model]

    finetuned = mean_last(model)
    if isinstance(base, HookedTransformer):
        base_mean = mean_last(base)
    else:
        handle = base if isinstance(base, LoraHandle) else get_handle(model)
        if handle is None:
            raise ValueError(
                "no base model: pass base=<the base HookedTransformer>, or finetune with pvlens "
                "so that the adapter can be switched off"
            )
        with handle.disabled():
            base_mean = mean_last(model)
    diff = (finetuned - base_mean).float()
    u = units.float()
    return ShiftResult(
        layers=layers,
        projection=(diff * u).sum(-1),
        base_projection=(base_mean.float() * u).sum(-1),
        finetuned_projection=(finetuned.float() * u).sum(-1),
        mean_shift=diff,
    )
