"""Projections of activations onto a trait direction: the scalar `x · v̂` (or the cosine).

Directions come from `pvlens.vectors.coerce` (the one route from paths, tensors and dicts to
vectors); this module only projects and picks the layer to monitor at.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.core.chat import EncodedChat
from pvlens.core.config import default_layer as middle_layer
from pvlens.io.atomic import read_json_checked
from pvlens.vectors.coerce import VectorsLike, as_persona_vectors, unit_direction

as_vectors = as_persona_vectors
"""Old name of `pvlens.vectors.coerce.as_persona_vectors` (kept importable from pvlens.monitor)."""


def _sweep_choice(source: Path) -> int | None:
    """The best layer recorded by a sweep next to a vectors file or in a run folder."""
    folder = source if source.is_dir() else source.parent
    sweep = folder / "sweep" / "sweep.json"
    if not sweep.exists():
        return None
    best = read_json_checked(sweep).get("best_layer")
    return best if isinstance(best, int) else None


def default_layer(vectors: VectorsLike, n_layers: int) -> int:
    """The layer to monitor at when none is given: the vectors' recorded choice (metadata
    `layer`/`best_layer`, or a sweep next to the vectors file), else the middle of the stack
    (`pvlens.core.config.default_layer`)."""
    single = isinstance(vectors, Tensor) and vectors.dim() == 1
    meta = {} if single else as_persona_vectors(vectors).metadata
    for key in ("layer", "best_layer"):
        if isinstance(meta.get(key), int):
            return meta[key]
    if isinstance(vectors, str | Path):
        choice = _sweep_choice(Path(vectors))
        if choice is not None:
            return choice
    return middle_layer(n_layers)


def project(
    acts: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"], cosine: bool = False
) -> Float[Tensor, "..."]:
    """`acts · v̂` (scalar projection on the unit direction), or the cosine `acts·v̂ / ‖acts‖`."""
    u = direction.to(acts.device, torch.float64)
    u = u / u.norm()
    x = acts.double()
    p = x @ u
    if cosine:
        p = p / x.norm(dim=-1).clamp_min(1e-12)
    return p.float()


def projections(
    model: HookedTransformer,
    chats: Sequence[EncodedChat],
    vectors: VectorsLike,
    layer: int,
    reductions: Sequence[str] = ("last_prompt",),
    cosine: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Float[Tensor, " n"]]:
    """Projection of each conversation's reductions at `layer` (the pass stops there)."""
    u = unit_direction(vectors, layer)
    acts = collect(model, chats, reductions, layers=[layer], batch_size=batch_size, progress=progress)
    return {r: project(a[:, 0], u, cosine) for r, a in acts.items()}


__all__ = ["VectorsLike", "as_vectors", "default_layer", "project", "projections", "unit_direction"]
