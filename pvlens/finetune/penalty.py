"""The L2 projection-shift penalty (a baseline in the paper, next to CAFT and preventative
steering): keep the activation's projection on the persona direction where the base model had it.

penalty = weight · mean over (samples, layers) of (x_l · v̂_l − base_l)², where x_l is the
last-prompt-token or response-averaged residual at block l's output and base_l the same
quantity in the frozen base model (computed once with the adapter disabled, then cached).
The paper finds the optimiser routes around it; it is here to reproduce that comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from pvlens.core.activations import collect
from pvlens.core.chat import EncodedChat
from pvlens.core.fingerprint import tensor_hash
from pvlens.core.hooks import resid_hook_name
from pvlens.finetune.data import Batch
from pvlens.finetune.vectors import unit_table
from pvlens.vectors.coerce import VectorsLike, vector_table


@dataclass
class ProjectionPenalty:
    """Penalise the shift of the projection onto persona directions during finetuning."""

    vectors: VectorsLike
    """Persona vectors: PersonaVectors, a [n_layers, d_model] tensor or {layer: vector}."""
    layers: Sequence[int]
    """Blocks whose output is constrained."""
    weight: float = 1.0
    """λ, the penalty's weight relative to the mean token cross-entropy."""
    reduction: Literal["last_prompt", "response_avg"] = "response_avg"
    """Which activation is projected: the last prompt token or the mean over response tokens."""
    base: Float[Tensor, "n_samples n_layers"] | None = field(default=None, repr=False)
    """Base-model projections per training sample (filled by `prepare`)."""
    _units: Tensor | None = field(default=None, repr=False)
    _captured: dict[int, Tensor] = field(default_factory=dict, repr=False)

    def describe(self) -> dict:
        """What a run manifest records (and keys its folder by)."""
        return {"type": "l2_projection", "layers": [int(x) for x in self.layers],
                "weight": self.weight, "reduction": self.reduction,
                "vectors": tensor_hash(vector_table(self.vectors))}

    def prepare(self, model, handle, chats: Sequence[EncodedChat], cache: Path | None = None) -> None:
        """Base projections of every sample, with the adapter disabled (cached in `cache`)."""
        if self.reduction not in ("last_prompt", "response_avg"):
            raise ValueError(f"reduction must be 'last_prompt' or 'response_avg', got {self.reduction!r}")
        units = unit_table(self.vectors, model.cfg.n_layers, model.cfg.d_model)
        self.layers = [int(x) % model.cfg.n_layers for x in self.layers]
        self._units = units[self.layers].to(model.W_E.device)  # [n_layers, d_model]
        key = tensor_hash(self._units.cpu())
        if cache is not None and cache.exists():
            saved = torch.load(cache, weights_only=True)
            if saved["layers"] == self.layers and saved["reduction"] == self.reduction \
                    and saved.get("units") == key and saved["base"].shape[0] == len(chats):
                self.base = saved["base"]
                return
        with handle.disabled():
            acts = collect(model, chats, reductions=(self.reduction,), layers=self.layers,
                           dtype=torch.float32, progress=False)[self.reduction]
        self.base = torch.einsum("nld,ld->nl", acts, self._units.cpu())
        if cache is not None:
            torch.save({"layers": self.layers, "reduction": self.reduction, "units": key,
                        "base": self.base}, cache)

    def hooks(self) -> list[tuple[str, Callable[..., None]]]:
        """Capture hooks (they read, never modify, the residual stream)."""
        self._captured.clear()

        def capture(layer: int):
            def fn(resid, hook):
                self._captured[layer] = resid
            return fn

        return [(resid_hook_name(layer), capture(layer)) for layer in self.layers]

    def value(self, batch: Batch) -> Float[Tensor, ""]:
        """Sum over the batch's rows of the per-row penalty (mean over layers), times weight."""
        if self.base is None or self._units is None:
            raise RuntimeError("call prepare() before training with a ProjectionPenalty")
        projs = []
        for j, layer in enumerate(self.layers):
            x = self._captured.pop(layer)  # [batch, pos, d_model], with grad
            if self.reduction == "last_prompt":
                rows = torch.arange(x.shape[0], device=x.device)
                red = x[rows, batch.last_prompt_index().to(x.device)]
            else:
                m = batch.response_mask().to(x.device, x.dtype)
                red = (m[..., None] * x).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
            projs.append(red.float() @ self._units[j].float())
        proj = torch.stack(projs, dim=-1)  # [batch, n_layers]
        base = self.base[batch.rows].to(proj.device)
        return self.weight * (proj - base).pow(2).mean(-1).sum()
