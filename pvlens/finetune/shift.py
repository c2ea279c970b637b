"""Finetuning shift (paper §5): how far finetuning moved the model along a persona direction.

shift_l = mean over evaluation prompts of the last-prompt-token activation at block l,
finetuned minus base, projected onto the unit persona vector of layer l. The paper finds it
predicts how strongly the finetuned model expresses the trait (r ≈ 0.76–0.97 across datasets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.core.generation import PromptLike, to_chats
from pvlens.core.steering import Intervention
from pvlens.finetune.lora import LoraHandle, get_handle
from pvlens.finetune.vectors import unit_table
from pvlens.vectors.coerce import VectorsLike


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
        """The shift at block `layer`."""
        return float(self.projection[self.layers.index(layer)])



def mean_last_prompt(
    model: HookedTransformer,
    prompts: Sequence[PromptLike],
    layers: Sequence[int] | None = None,
    system: str | None = None,
    steer: Intervention | Sequence[Intervention] | None = None,
    batch_size: int = 32,
    dtype: torch.dtype | str | None = torch.float32,
    progress: bool = False,
) -> Float[Tensor, "n_layers d_model"]:
    """Mean last-prompt-token activation per layer over `prompts`, in fp64."""
    chats = to_chats(model, list(prompts), system)
    if not chats:
        raise ValueError("the finetuning shift needs at least one evaluation prompt")
    acts = collect(model, chats, reductions=("last_prompt",), layers=layers, batch_size=batch_size,
                   dtype=dtype, steer=steer, progress=progress)["last_prompt"]
    return acts.double().mean(0)


def shift_between(
    finetuned: Float[Tensor, "n_layers d_model"],
    base: Float[Tensor, "n_layers d_model"],
    units: Float[Tensor, "n_layers d_model"],
    layers: Sequence[int],
) -> ShiftResult:
    """The shift from two mean activations (rows = `layers`) and the unit vectors of those rows."""
    diff = (finetuned - base).float()
    u = units.float()
    return ShiftResult(
        layers=list(layers),
        projection=(diff * u).sum(-1),
        base_projection=(base.float() * u).sum(-1),
        finetuned_projection=(finetuned.float() * u).sum(-1),
        mean_shift=diff,
    )


def base_mean_of(
    model: HookedTransformer, base: HookedTransformer | LoraHandle | None, **mean_kw: Any,
) -> Float[Tensor, "n_layers d_model"]:
    """The base model's mean: a separate model, or `model` with its pvlens adapter switched off."""
    if isinstance(base, HookedTransformer):
        return mean_last_prompt(base, **mean_kw)
    handle = base if isinstance(base, LoraHandle) else get_handle(model)
    if handle is None:
        raise ValueError(
            "no base model: pass base=<the base HookedTransformer>, or finetune with pvlens "
            "so that the adapter can be switched off"
        )
    with handle.disabled():
        return mean_last_prompt(model, **mean_kw)


def finetuning_shift(
    model: HookedTransformer,
    prompts: Sequence[PromptLike],
    vectors: VectorsLike,
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
        vectors: persona vectors (PersonaVectors, a file, [n_layers, d_model] tensor or {layer: vec}).
        base: the base model, or None / the adapter handle to use `model` with its pvlens
            adapter switched off.
        dtype: compute dtype; fp32 by default since the shift is a small difference of means.
    """
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(x) % n_layers for x in layers]
    units = unit_table(vectors, n_layers, model.cfg.d_model)[layers]
    kw: dict[str, Any] = dict(prompts=prompts, layers=layers, system=system, batch_size=batch_size,
                              dtype=dtype, progress=progress)
    finetuned = mean_last_prompt(model, **kw)
    return shift_between(finetuned, base_mean_of(model, base, **kw), units, layers)
