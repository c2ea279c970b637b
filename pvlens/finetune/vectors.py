"""Reading persona vectors for finetuning: a PersonaVectors object, a tensor, or a file."""

from __future__ import annotations

from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor


def as_table(vectors, n_layers: int, d_model: int | None = None) -> Float[Tensor, "n_layers d_model"]:
    """A `[n_layers, d_model]` float tensor from whatever holds one vector per layer.

    Accepts `pvlens.vectors.PersonaVectors` (anything with `[layer] -> Tensor` and a length),
    a `[n_layers, d_model]` tensor, or a `{layer: vector}` dict (missing layers are zero).
    """
    if isinstance(vectors, Tensor):
        table = vectors.float()
    elif isinstance(getattr(vectors, "vectors", None), Tensor):  # PersonaVectors
        table = vectors.vectors.float()
    elif isinstance(vectors, dict):
        first = next(iter(vectors.values()))
        table = torch.zeros(n_layers, torch.as_tensor(first).shape[-1])
        for layer, v in vectors.items():
            table[int(layer)] = torch.as_tensor(v).float()
    elif hasattr(vectors, "__getitem__"):
        table = torch.stack([torch.as_tensor(vectors[layer]).float() for layer in range(n_layers)])
    else:
        raise TypeError(f"cannot read persona vectors from a {type(vectors).__name__}")
    if table.dim() != 2 or table.shape[0] != n_layers:
        raise ValueError(
            f"expected one vector per layer, [{n_layers}, d_model]; got shape {tuple(table.shape)}"
            + (" — a paper-format file has n_layers+1 rows (embeddings first): drop row 0"
               if table.dim() == 2 and table.shape[0] == n_layers + 1 else "")
        )
    if d_model is not None and table.shape[1] != d_model:
        raise ValueError(f"vectors have d_model {table.shape[1]}, the model has {d_model}")
    return table


def load_vectors(path: str | Path, n_layers: int, key: str = "response_avg") -> Float[Tensor, "n_layers d_model"]:
    """Vectors from a file: a `PersonaVectors` file if pvlens.vectors can read it, else a raw
    safetensors/torch file holding a `[n_layers, d_model]` tensor under `key`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"vectors file {path} does not exist; create one with `pvlens extract TRAIT --out DIR`")
    try:
        from pvlens.vectors import PersonaVectors  # written in parallel; optional here
    except ImportError:
        PersonaVectors = None
    if PersonaVectors is not None:
        try:
            return as_table(PersonaVectors.load(path, reduction=key), n_layers)
        except (ValueError, KeyError, OSError, TypeError):
            pass  # fall through to the raw formats
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    else:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(tensors, Tensor):
            tensors = {key: tensors}
    if key not in tensors:
        raise KeyError(f"{path} has no tensor {key!r} (it has {sorted(tensors)}); pass key=...")
    return as_table(tensors[key], n_layers)


def unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
