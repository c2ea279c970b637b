"""PersonaVectors: a trait's per-layer vectors as a value (arithmetic, norms, files).

Layer convention: row `l` is the direction at `blocks.{l}.hook_resid_post` (TransformerLens
block index). The paper's files index HF `hidden_states`, where index 0 is the embeddings,
so paper layer L = pvlens layer L-1; `from_paper_pt` / `to_paper_pt` convert.
Files are safetensors (no pickle) with JSON metadata that says how they were made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from pvlens.errors import InputError

LAYER_CONVENTION = "row l = TransformerLens blocks.{l}.hook_resid_post (paper layer l+1)"
DEFAULT_REDUCTION = "response_avg"
DEFAULT_MODEL_KEY = "smollm2-135m-instruct"  # folder of the shipped vectors under pvlens/data/vectors


class PersonaVectors:
    """Per-layer vectors for one trait, one tensor [n_layers, d_model] per reduction."""

    def __init__(
        self,
        tensors: Mapping[str, Float[Tensor, "n_layers d_model"]],
        metadata: Mapping[str, Any] | None = None,
        reduction: str | None = None,
    ) -> None:
        if not tensors:
            raise ValueError("PersonaVectors needs at least one tensor")
        shapes = {tuple(t.shape) for t in tensors.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"all tensors must share one [n_layers, d_model] shape, got {shapes}")
        self.tensors = {k: v.detach().float() for k, v in tensors.items()}
        self.metadata = dict(metadata or {})
        self.reduction = reduction or (
            DEFAULT_REDUCTION if DEFAULT_REDUCTION in self.tensors else next(iter(self.tensors))
        )
        if self.reduction not in self.tensors:
            raise KeyError(f"reduction {self.reduction!r} not in {sorted(self.tensors)}")

    # --- access ----------------------------------------------------------------------------
    @property
    def vectors(self) -> Float[Tensor, "n_layers d_model"]:
        """The active reduction's [n_layers, d_model] tensor."""
        return self.tensors[self.reduction]

    @property
    def n_layers(self) -> int:
        return self.vectors.shape[0]

    @property
    def d_model(self) -> int:
        return self.vectors.shape[1]

    @property
    def trait(self) -> str | None:
        return self.metadata.get("trait")

    def __getitem__(self, layer: int) -> Float[Tensor, " d_model"]:
        if not -self.n_layers <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range for {self.n_layers} layers ({LAYER_CONVENTION})")
        return self.vectors[layer]

    def __len__(self) -> int:
        return self.n_layers

    def use(self, reduction: str) -> PersonaVectors:
        """The same vectors with another reduction active."""
        return PersonaVectors(self.tensors, self.metadata, reduction)

    def norms(self) -> Float[Tensor, " n_layers"]:
        return self.vectors.norm(dim=-1)

    def unit(self) -> PersonaVectors:
        """Every layer's vector scaled to norm 1 (all reductions)."""
        return self._map(lambda t: t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def cosine(self, other: PersonaVectors | Tensor) -> Float[Tensor, " n_layers"]:
        """Per-layer cosine with another set of vectors (same layers)."""
        o = other.vectors if isinstance(other, PersonaVectors) else other
        return torch.nn.functional.cosine_similarity(self.vectors, o.to(self.vectors), dim=-1)

    def to(self, device: str | torch.device) -> PersonaVectors:
        return self._map(lambda t: t.to(device))

    # --- arithmetic (a value, like repeng's ControlVector) ---------------------------------
    def _map(self, fn: Callable[[Tensor], Tensor]) -> PersonaVectors:
        return PersonaVectors({k: fn(v) for k, v in self.tensors.items()}, self.metadata, self.reduction)

    def _zip(self, other: PersonaVectors, fn: Callable[[Tensor, Tensor], Tensor]) -> PersonaVectors:
        shared = set(self.tensors) & set(other.tensors)
        if not shared:
            raise ValueError("the two PersonaVectors share no reduction")
        meta = {"derived_from": [self.metadata.get("trait"), other.metadata.get("trait")]}
        red = self.reduction if self.reduction in shared else sorted(shared)[0]
        return PersonaVectors({k: fn(self.tensors[k], other.tensors[k]) for k in shared}, meta, red)

    def __add__(self, other: PersonaVectors) -> PersonaVectors:
        return self._zip(other, torch.add)

    def __sub__(self, other: PersonaVectors) -> PersonaVectors:
        return self._zip(other, torch.sub)

    def __mul__(self, scalar: float) -> PersonaVectors:
        return self._map(lambda t: t * float(scalar))

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> PersonaVectors:
        return self._map(lambda t: t / float(scalar))

    def __neg__(self) -> PersonaVectors:
        return self * -1.0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PersonaVectors) or set(self.tensors) != set(other.tensors):
            return False
        return all(torch.equal(self.tensors[k], other.tensors[k].to(self.tensors[k])) for k in self.tensors)

    def __repr__(self) -> str:
        return (
            f"PersonaVectors(trait={self.trait!r}, layers={self.n_layers}, d_model={self.d_model}, "
            f"reductions={sorted(self.tensors)}, active={self.reduction!r})"
        )

    # --- files -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """safetensors with JSON metadata (no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.metadata, "layer_convention": LAYER_CONVENTION, "reductions": sorted(self.tensors)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        save_file(tensors, str(path), metadata={"pvlens": json.dumps(meta, default=str)})
        return path

    @classmethod
    def load(cls, path: str | Path, reduction: str | None = None) -> PersonaVectors:
        path = Path(path)
        if path.is_dir():
            path = path / "vectors.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; create vectors with `pvlens extract TRAIT --out DIR`")
        if path.suffix == ".pt":
            return cls.from_paper_pt(path)
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("pvlens", "{}")
            tensors = load_file(str(path))
            metadata = json.loads(raw)
        except (SafetensorError, json.JSONDecodeError, OSError) as e:
            raise InputError(
                f"{path} is not a readable pvlens vectors file ({e}); pass a file written by "
                "`pvlens extract` / PersonaVectors.save, or convert it with `pvlens vectors import`"
            ) from None
        if not tensors:
            raise InputError(f"{path} holds no tensors; it is not a persona-vectors file")
        return cls(tensors, metadata, reduction)

    @classmethod
    def builtin(cls, trait: str, model: str = DEFAULT_MODEL_KEY, reduction: str | None = None) -> PersonaVectors:
        """Vectors shipped with pvlens for the offline default model (extracted with
        `pvlens extract TRAIT --preset cpu --samples 3`), so notebooks and screening need no extraction."""
        folder = Path(str(resources.files("pvlens"))) / "data" / "vectors" / model
        path = folder / f"{trait}.safetensors"
        if not path.exists():
            have = sorted(p.stem for p in folder.glob("*.safetensors")) if folder.exists() else []
            raise FileNotFoundError(
                f"no shipped vectors for trait {trait!r} and model {model!r} (shipped: {have}); "
                f"extract them with `pvlens extract {trait} --out runs/{trait}`"
            )
        return cls.load(path, reduction)

    @classmethod
    def from_paper_pt(
        cls, path: str | Path, reduction: str = DEFAULT_REDUCTION, **metadata: Any
    ) -> PersonaVectors:
        """Import the paper code's bare tensor [n_layers+1, d_model] (index 0 = embeddings)."""
        t = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(t, Tensor) or t.dim() != 2:
            raise ValueError(f"{path}: expected a bare tensor [n_layers+1, d_model], got {type(t).__name__}")
        return cls({reduction: t[1:].float()}, {"source": f"paper .pt ({path})", **metadata})

    def to_paper_pt(self, path: str | Path, embedding_row: Tensor | None = None) -> Path:
        """Export as the paper's [n_layers+1, d_model] tensor; row 0 (embeddings) is zeros
        unless given, since pvlens vectors start at block 0's output."""
        row0 = torch.zeros(1, self.d_model) if embedding_row is None else embedding_row.reshape(1, -1).float()
        torch.save(torch.cat([row0, self.vectors.cpu()]), str(path))
        return Path(path)

    # --- other tools' formats (pvlens.vectors.formats; layer b = block b in all three) --------
    def to_gguf(self, path: str | Path, layers: Sequence[int] | None = None,
                model_hint: str | None = None) -> Path:
        """llama.cpp control vector: `direction.{b}` is added to block b's output (block 0 is
        left out — llama.cpp cannot hold it)."""
        from pvlens.vectors.formats.llamacpp import write_gguf

        return write_gguf(self, path, layers, model_hint)

    @classmethod
    def from_gguf(cls, path: str | Path, n_layers: int | None = None) -> PersonaVectors:
        """Read a llama.cpp / repeng control-vector GGUF (absent blocks are zeros)."""
        from pvlens.vectors.formats.llamacpp import read_gguf

        return read_gguf(path, n_layers)

    def to_repeng(self, layers: Sequence[int] | None = None, model_type: str | None = None) -> Any:
        """A repeng `ControlVector` (its layer id i = block i); steer with
        `ControlModel(hf, [i]).set_control(cv, coeff=alpha)`."""
        from pvlens.vectors.formats.repeng import to_repeng

        return to_repeng(self, layers, model_type)

    @classmethod
    def from_repeng(cls, control_vector: Any, n_layers: int | None = None, **metadata: Any) -> PersonaVectors:
        from pvlens.vectors.formats.repeng import from_repeng

        return from_repeng(control_vector, n_layers, **metadata)

    def to_steering_vector(self, layers: Sequence[int] | None = None) -> Any:
        """A steering-vectors `SteeringVector` (decoder_block i = block i); it steers every layer
        it holds, so pass the layers you mean."""
        from pvlens.vectors.formats.steering_vectors import to_steering_vector

        return to_steering_vector(self, layers)

    @classmethod
    def from_steering_vector(cls, steering_vector: Any, n_layers: int | None = None,
                             **metadata: Any) -> PersonaVectors:
        from pvlens.vectors.formats.steering_vectors import from_steering_vector

        return from_steering_vector(steering_vector, n_layers, **metadata)
