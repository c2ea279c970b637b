"""steering-vectors `SteeringVector` in and out (https://github.com/steering-vectors/steering-vectors,
PyPI `steering-vectors`).

With `layer_type="decoder_block"` its layer numbers index the model's decoder blocks as found
by its layer matcher (`model.layers.{num}` for Llama-style HF models) and its forward hook adds
`multiplier * activation` to that block's output: steering-vectors layer i = pvlens block i.
`sv.apply(model, multiplier=α)` (default `min_token_index=0`: every token, also under the KV
cache) equals pvlens `Steering(v[i], i, α, "all")` — for every layer the object holds at once,
so export only the layers you mean to steer.

On disk (the library has no file format of its own) pvlens writes a pickle-free torch file
`{"layer_activations": {i: tensor}, "layer_type": "decoder_block"}`; load it with
`SteeringVector(**torch.load(path, weights_only=True))`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from pvlens.vectors.formats.layers import assemble, describe, pick_layers
from pvlens.vectors.persona import DEFAULT_REDUCTION, PersonaVectors

INSTALL_HINT = "steering-vectors is not installed: pip install 'pvlens[interop]'"


def to_steering_vector(vecs: PersonaVectors, layers: Iterable[int] | None = None) -> Any:
    """A `SteeringVector` (decoder_block) holding the active reduction at `layers`
    (default: every block whose vector is not all zeros)."""
    try:
        from steering_vectors import SteeringVector
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None
    return SteeringVector(layer_activations=_rows(vecs, layers), layer_type="decoder_block")


def from_steering_vector(
    sv: Any, n_layers: int | None = None, reduction: str = DEFAULT_REDUCTION, **metadata: Any
) -> PersonaVectors:
    """PersonaVectors from a `SteeringVector` (or its saved dict); missing blocks are zeros."""
    acts = sv.get("layer_activations") if isinstance(sv, dict) else getattr(sv, "layer_activations", None)
    kind = sv.get("layer_type", "decoder_block") if isinstance(sv, dict) else getattr(sv, "layer_type", None)
    if not isinstance(acts, dict):
        raise TypeError(f"expected a steering-vectors SteeringVector, got {type(sv).__name__}")
    if kind != "decoder_block":
        raise ValueError(f"layer_type {kind!r}: only decoder_block vectors are residual-stream vectors")
    rows = {int(k): torch.as_tensor(v).detach().reshape(-1).float().cpu() for k, v in acts.items()}
    tensor = assemble(rows, n_layers, "SteeringVector")
    meta = {"imported_from": f"steering-vectors SteeringVector (layers {describe(sorted(rows))})", **metadata}
    return PersonaVectors({reduction: tensor}, meta)


def write_steering_vector(vecs: PersonaVectors, path: str | Path, layers: Iterable[int] | None = None) -> Path:
    """Save what `to_steering_vector` would hold, without needing the library installed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"layer_activations": _rows(vecs, layers), "layer_type": "decoder_block"}, str(path))
    return path


def read_steering_vector(path: str | Path, n_layers: int | None = None,
                         reduction: str = DEFAULT_REDUCTION) -> PersonaVectors:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a torch file pvlens can read safely ({type(e).__name__})") from None
    if not isinstance(obj, dict) or "layer_activations" not in obj:
        raise ValueError(f"{path}: expected a dict with 'layer_activations' (a saved SteeringVector)")
    return from_steering_vector(obj, n_layers, reduction, imported_from=f"steering-vectors file {path.name}")


def _rows(vecs: PersonaVectors, layers: Iterable[int] | None) -> dict[int, torch.Tensor]:
    return {b: vecs.vectors[b].detach().cpu().clone() for b in pick_layers(vecs.vectors, layers)}
