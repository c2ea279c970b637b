"""repeng `ControlVector` in and out (https://github.com/vgel/repeng, PyPI `repeng`).

repeng's layer ids index `model.model.layers` (its `ControlModule` wraps that layer and adds
`coeff * direction` to the layer's output hidden state; `read_representations` reads
`hidden_states[id + 1]`), so repeng layer id i = pvlens block i, with no shift.
`ControlModel.set_control(cv, coeff)` adds `coeff * cv.directions[i]` with repeng's defaults
(`normalize=False`, operator `+`): the same as pvlens `Steering(v[i], i, alpha=coeff, "all")`
(repeng masks only left padding). Directions are copied raw — repeng's own trained vectors are
unit-norm PCA components, pvlens's are raw mean differences — so α keeps pvlens's meaning.

repeng 0.4.0 annotates with `np.float_`, which NumPy 2 removed; `load_repeng` supplies the
alias only while repeng is being imported.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import torch

from pvlens.vectors.formats.layers import assemble, describe, pick_layers
from pvlens.vectors.formats.llamacpp import model_hint_of
from pvlens.vectors.persona import DEFAULT_REDUCTION, PersonaVectors

INSTALL_HINT = "repeng is not installed: pip install 'pvlens[interop]' (or pip install --no-deps repeng==0.4.0)"


@contextlib.contextmanager
def _numpy2_alias() -> Iterator[None]:
    added = "float_" not in np.__dict__
    if added:
        np.float_ = np.float64  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float_  # type: ignore[attr-defined]


def load_repeng() -> ModuleType:
    """`import repeng`, working around repeng 0.4.0's NumPy-1-only annotations."""
    try:
        with _numpy2_alias():
            return importlib.import_module("repeng")
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None


def to_repeng(
    vecs: PersonaVectors, layers: Iterable[int] | None = None, model_type: str | None = None
) -> Any:
    """A repeng `ControlVector` holding the active reduction at `layers` (default: every
    block whose vector is not all zeros; block 0 is allowed — repeng can steer it)."""
    repeng = load_repeng()
    chosen = pick_layers(vecs.vectors, layers)
    directions = {b: vecs.vectors[b].detach().cpu().numpy().astype(np.float32) for b in chosen}
    return repeng.ControlVector(model_type=model_type or model_hint_of(vecs), directions=directions)


def from_repeng(
    cv: Any, n_layers: int | None = None, reduction: str = DEFAULT_REDUCTION, **metadata: Any
) -> PersonaVectors:
    """PersonaVectors from a repeng `ControlVector` (missing blocks are zeros; `n_layers`
    defaults to the highest layer id + 1)."""
    if not hasattr(cv, "directions") or not isinstance(cv.directions, dict):
        raise TypeError(f"expected a repeng ControlVector, got {type(cv).__name__}")
    rows = {int(k): torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(-1).copy())
            for k, v in cv.directions.items()}
    tensor = assemble(rows, n_layers, "repeng ControlVector")
    meta = {"model_hint": getattr(cv, "model_type", None),
            "imported_from": f"repeng ControlVector (layers {describe(sorted(rows))})", **metadata}
    return PersonaVectors({reduction: tensor}, meta)
