"""Cross-trait geometry: per-layer cosines between traits' vectors, and a PCA of them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from pvlens.vectors import PersonaVectors


def cosine_matrix(vectors: Sequence[PersonaVectors]) -> Float[Tensor, "n_layers n_traits n_traits"]:
    """cos(v_i[l], v_j[l]) for every layer l and pair of traits."""
    if len({v.n_layers for v in vectors}) != 1 or len({v.d_model for v in vectors}) != 1:
        raise ValueError("all vectors must come from the same model (same layers and d_model)")
    stacked = torch.stack([v.unit().vectors for v in vectors], dim=1)  # [layers, traits, d]
    return stacked @ stacked.transpose(1, 2)


def pca(
    vectors: Sequence[PersonaVectors], layer: int, n_components: int = 2
) -> tuple[Float[Tensor, "n_traits n_components"], Float[Tensor, " n_components"]]:
    """Coordinates of the traits' unit vectors at one layer on their top principal axes,
    and the fraction of variance each axis explains."""
    x = torch.stack([v.unit()[layer] for v in vectors]).double()
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(n_components, vh.shape[0])
    explained = (s**2 / (s**2).sum().clamp_min(1e-12))[:k]
    return (x @ vh[:k].T).float(), explained.float()


def names(vectors: Sequence[PersonaVectors]) -> list[str]:
    return [v.trait or f"vector{i}" for i, v in enumerate(vectors)]
