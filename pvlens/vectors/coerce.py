"""The one route from whatever a user holds to persona vectors: a PersonaVectors, a file or run
folder, a `[n_layers, d_model]` tensor, or a `{layer: vector}` dict.

Every module that accepts vectors calls these, so errors (missing file, wrong shape, a paper
file with its extra embedding row, a zero or non-finite vector) read the same everywhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from pvlens.vectors.persona import PersonaVectors

VectorsLike = PersonaVectors | Tensor | str | Path | Mapping[int, Tensor]
"""Anything pvlens accepts where persona vectors are expected."""


def _load_path_or_shipped(source: str | Path, reduction: str | None) -> PersonaVectors:
    """A file or run folder; a bare name that is no path (e.g. "evil") is a shipped trait."""
    path = Path(source)
    if not path.exists() and isinstance(source, str) and "/" not in source and not path.suffix:
        return PersonaVectors.builtin(source, reduction=reduction)
    return PersonaVectors.load(path, reduction=reduction)


def as_persona_vectors(
    vectors: VectorsLike, reduction: str | None = None, n_layers: int | None = None
) -> PersonaVectors:
    """A PersonaVectors from any VectorsLike; `n_layers` checks (and explains) the row count."""
    if isinstance(vectors, PersonaVectors):
        pv = vectors.use(reduction) if reduction else vectors
    elif isinstance(vectors, str | Path):
        pv = _load_path_or_shipped(vectors, reduction)
    elif isinstance(vectors, Tensor):
        table = vectors.detach().float()
        if table.dim() == 1:
            raise ValueError("a single vector has no layers; pass [n_layers, d_model] or {layer: vector}")
        pv = PersonaVectors({"response_avg": table}, {})
    elif isinstance(vectors, Mapping):
        if not vectors:
            raise ValueError("an empty {layer: vector} mapping holds no vectors")
        if n_layers is None:
            n_layers = max(int(k) for k in vectors) + 1
        first = torch.as_tensor(next(iter(vectors.values())))
        table = torch.zeros(n_layers, first.shape[-1])
        for layer, v in vectors.items():
            table[int(layer)] = torch.as_tensor(v).float()
        pv = PersonaVectors({"response_avg": table}, {})
    else:
        raise TypeError(
            f"cannot read persona vectors from a {type(vectors).__name__}; pass a PersonaVectors, "
            "a vectors file or run folder, a [n_layers, d_model] tensor or a {layer: vector} dict"
        )
    if n_layers is not None and pv.n_layers != n_layers:
        hint = (
            " — a paper-format file has n_layers+1 rows (embeddings first): load it with "
            "PersonaVectors.from_paper_pt"
            if pv.n_layers == n_layers + 1 else ""
        )
        raise ValueError(f"expected one vector per layer ({n_layers}), got {pv.n_layers}{hint}")
    return pv


def vector_table(
    vectors: VectorsLike, n_layers: int | None = None, reduction: str | None = None
) -> Float[Tensor, "n_layers d_model"]:
    """The `[n_layers, d_model]` float tensor of any VectorsLike."""
    return as_persona_vectors(vectors, reduction, n_layers).vectors.float()


def direction(
    vectors: VectorsLike | Float[Tensor, " d_model"], layer: int | None = None,
    reduction: str | None = None,
) -> Float[Tensor, " d_model"]:
    """The raw vector at `layer` (a 1-D tensor is used as it is); finite, warns when zero."""
    if isinstance(vectors, Tensor) and vectors.dim() == 1:
        d = vectors.detach().float()
    else:
        pv = as_persona_vectors(vectors, reduction)
        if layer is None:
            raise ValueError("a layer is needed to pick one row of the persona vectors")
        if not -pv.n_layers <= layer < pv.n_layers or layer < 0:
            raise ValueError(f"layer {layer} is out of range: these vectors have layers 0..{pv.n_layers - 1}")
        d = pv[layer].detach().float()
    norm = float(d.norm())
    if not math.isfinite(norm):
        raise ValueError(f"the persona vector at layer {layer} is not finite (norm {norm}); re-extract it")
    if norm == 0:
        warnings.warn(f"the persona vector at layer {layer} is zero: steering with it does nothing",
                      stacklevel=2)
    return d


def unit_direction(
    vectors: VectorsLike | Float[Tensor, " d_model"], layer: int | None = None,
    reduction: str | None = None,
) -> Float[Tensor, " d_model"]:
    """v̂ = v / ‖v‖ at `layer`; a zero vector is an error here (it has no direction)."""
    d = direction(vectors, layer, reduction)
    norm = d.norm()
    if norm == 0:
        raise ValueError(f"the persona vector at layer {layer} is zero; it has no direction to project on")
    return d / norm
