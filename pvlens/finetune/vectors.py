"""Persona vectors as finetuning uses them: one `[n_layers, d_model]` table, raw or unit rows.

Thin wrappers over `pvlens.vectors.coerce` (the one route from files, tensors and dicts to
vectors), kept under their old names.
"""

from __future__ import annotations

from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from pvlens.errors import InputError
from pvlens.vectors.coerce import VectorsLike, as_persona_vectors, vector_table


def as_table(
    vectors: VectorsLike, n_layers: int, d_model: int | None = None
) -> Float[Tensor, "n_layers d_model"]:
    """The `[n_layers, d_model]` float table of any VectorsLike; `d_model` checks the width."""
    table = vector_table(vectors, n_layers)
    if d_model is not None and table.shape[1] != d_model:
        raise InputError(f"the persona vectors have d_model {table.shape[1]}, the model has {d_model}; "
                         "extract them with this model")
    return table


def load_vectors(
    path: str | Path, n_layers: int, key: str = "response_avg"
) -> Float[Tensor, "n_layers d_model"]:
    """The table of reduction `key` from a vectors file or run folder."""
    return vector_table(path, n_layers, reduction=key)


def unit_table(
    vectors: VectorsLike, n_layers: int, d_model: int | None = None
) -> Float[Tensor, "n_layers d_model"]:
    """Every layer's vector scaled to norm 1 (a zero row stays zero)."""
    table = as_table(vectors, n_layers, d_model)
    return as_persona_vectors(table).unit().vectors.float()
