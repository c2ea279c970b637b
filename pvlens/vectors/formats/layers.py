"""Which rows of a PersonaVectors an export writes, and how imports rebuild the full tensor.

Every format here indexes layers like pvlens does (block b = TransformerLens
`blocks.{b}.hook_resid_post` = output of HF `model.model.layers[b]`), so the only choices are
*which* blocks to write and how many rows the imported tensor gets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def nonzero_layers(vectors: Float[Tensor, "n_layers d_model"]) -> list[int]:
    """Blocks whose vector is not all zeros: the default export set, because an all-zero row
    steers nothing and leaving it out makes foreign → pvlens → foreign round trips exact."""
    return [i for i in range(vectors.shape[0]) if bool(vectors[i].any())]


def pick_layers(
    vectors: Float[Tensor, "n_layers d_model"], layers: Iterable[int] | None
) -> list[int]:
    """Validated, sorted, de-duplicated block indices (negative counts from the end)."""
    n = vectors.shape[0]
    if layers is None:
        return nonzero_layers(vectors)
    out = set()
    for layer in layers:
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} out of range: the vectors have blocks 0..{n - 1}")
        out.add(layer % n)
    if not out:
        raise ValueError("no layers to export")
    return sorted(out)


def assemble(
    rows: Mapping[int, Tensor], n_layers: int | None, source: str
) -> Float[Tensor, "n_layers d_model"]:
    """Rows keyed by block index → one [n_layers, d_model] float32 tensor, zeros elsewhere."""
    if not rows:
        raise ValueError(f"{source}: no layer vectors found")
    dims = {tuple(t.shape) for t in rows.values()}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise ValueError(f"{source}: layer vectors must be 1-D and of one size, got shapes {sorted(dims)}")
    if min(rows) < 0:
        raise ValueError(f"{source}: negative layer index {min(rows)}")
    need = max(rows) + 1
    n_layers = need if n_layers is None else n_layers
    if n_layers < need:
        raise ValueError(f"{source}: holds layer {max(rows)} but n_layers is {n_layers}")
    out = torch.zeros(n_layers, next(iter(dims))[0], dtype=torch.float32)
    for layer, t in rows.items():
        out[layer] = t.to(torch.float32)
    return out


def describe(layers: Sequence[int]) -> str:
    """`1-29` or `3,7,9`: compact text for messages and metadata."""
    if layers and list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(x) for x in layers)
