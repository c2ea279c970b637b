"""Vectors other tools load: llama.cpp control vectors (GGUF), repeng `ControlVector`,
steering-vectors `SteeringVector`, and the paper's `.pt` tensors.

pvlens's safetensors + metadata stays the canonical file; these are conversions, one module per
format. Every format uses pvlens's block index (blocks.{b}.hook_resid_post = output of HF
`model.model.layers[b]`) except the paper's `.pt`, whose row b+1 is block b.

    export_vectors(vecs, "evil.gguf", "gguf", layers=[15])
    vecs = import_vectors("evil.gguf")            # format detected from the file's bytes
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pvlens.vectors.formats.llamacpp import read_gguf, write_gguf
from pvlens.vectors.formats.repeng import from_repeng, load_repeng, to_repeng
from pvlens.vectors.formats.steering_vectors import (
    from_steering_vector,
    read_steering_vector,
    to_steering_vector,
    write_steering_vector,
)
from pvlens.vectors.persona import DEFAULT_REDUCTION, PersonaVectors

FORMATS = ("gguf", "repeng", "steering-vectors", "paper-pt")
"""Export formats: gguf (llama.cpp), repeng (GGUF written by repeng itself), steering-vectors
(torch dict), paper-pt (bare [n_layers+1, d_model] tensor)."""

SUFFIX = {"gguf": ".gguf", "repeng": ".gguf", "steering-vectors": ".pt", "paper-pt": ".pt"}


def export_vectors(
    vecs: PersonaVectors,
    path: str | Path,
    fmt: str,
    layers: Iterable[int] | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write the active reduction in `fmt`; `layers` are pvlens blocks (default: every block
    with a non-zero vector that the format can hold)."""
    path = Path(path)
    if fmt == "gguf":
        return write_gguf(vecs, path, layers, model_hint)
    if fmt == "repeng":
        path.parent.mkdir(parents=True, exist_ok=True)
        to_repeng(vecs, layers, model_hint).export_gguf(str(path))
        return path
    if fmt == "steering-vectors":
        return write_steering_vector(vecs, path, layers)
    if fmt == "paper-pt":
        if layers is not None:
            raise ValueError("paper-pt holds every layer; --layers does not apply")
        path.parent.mkdir(parents=True, exist_ok=True)
        return vecs.to_paper_pt(path)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def detect_format(path: str | Path) -> str:
    """gguf | steering-vectors | paper-pt | pvlens, from the file's first bytes (and for torch
    files, what they hold)."""
    import torch

    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        return "pvlens"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"GGUF":
        return "gguf"
    if head[:2] == b"PK":  # torch's zip container
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: a torch file pvlens cannot read safely ({type(e).__name__})") from None
        if isinstance(obj, torch.Tensor):
            return "paper-pt"
        if isinstance(obj, dict) and "layer_activations" in obj:
            return "steering-vectors"
        raise ValueError(f"{path}: a torch file holding {type(obj).__name__}, not a vector pvlens knows")
    raise ValueError(f"{path}: not a GGUF, torch or safetensors file")


def import_vectors(
    path: str | Path,
    fmt: str = "auto",
    n_layers: int | None = None,
    reduction: str | None = None,
) -> PersonaVectors:
    """Read any supported file into PersonaVectors (blocks the file lacks are zeros)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in ("gguf", "repeng"):
        return read_gguf(path, n_layers, reduction)
    if fmt == "steering-vectors":
        return read_steering_vector(path, n_layers, reduction or DEFAULT_REDUCTION)
    if fmt == "paper-pt":
        vecs = PersonaVectors.from_paper_pt(path, reduction or DEFAULT_REDUCTION)
        if n_layers is not None and n_layers != vecs.n_layers:
            raise ValueError(f"{path} holds {vecs.n_layers} blocks, not {n_layers}")
        return vecs
    if fmt == "pvlens":
        return PersonaVectors.load(path, reduction)
    raise ValueError(f"unknown format {fmt!r}; choose from auto, {', '.join(FORMATS)}, pvlens")


__all__ = [
    "FORMATS", "detect_format", "export_vectors", "from_repeng", "from_steering_vector",
    "import_vectors", "load_repeng", "read_gguf", "read_steering_vector", "to_repeng",
    "to_steering_vector", "write_gguf", "write_steering_vector",
]
