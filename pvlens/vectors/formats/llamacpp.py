"""llama.cpp control vectors (GGUF): the files `llama-cli --control-vector` loads and repeng's
`ControlVector.export_gguf` writes.

Layout: one float32 1-D tensor `direction.{N}` per layer, metadata
`general.architecture = "controlvector"`, `controlvector.model_hint` (repeng requires it on
import) and `controlvector.layer_count`. pvlens adds `pvlens.*` keys (metadata JSON, n_layers,
reduction) that llama.cpp and repeng ignore.

Layer mapping, read from the llama.cpp source (ggml-org/llama.cpp):
`common_control_vector_load_one` (common/common.cpp) stores `direction.N` at slot N and
rejects N = 0; `llama_adapter_cvec::apply` (src/llama-adapter.cpp) hands slot N to
`tensors[N]`; each model graph (e.g. src/models/llama.cpp) runs
`for (il = 0; il < n_layer; ++il) { ...; cur = build_cvec(cur, il); cb(cur, "l_out", il); }`,
i.e. adds `tensors[il]` to the output of 0-based layer `il`. So **direction.N is added to the
output of block N** — pvlens block b ↔ `direction.{b}` (= HF `hidden_states[b+1]`, paper layer
b+1), the same ids repeng writes (its ids index `model.model.layers`). Block 0 cannot be
expressed: llama.cpp refuses a file holding `direction.0`, so exports leave block 0 out.
(llama.cpp's own `llama-cvector-generator` measures at layer il's output but names the result
`direction.{il+1}`, so its vectors act one block later than where they were measured; an import
here keeps llama.cpp's meaning — where the vector is *added*.)
Measured in a llama.cpp build by tools/llamacpp_check.py (results/llamacpp/results.json):
steering through `direction.N` equals pvlens's `Steering(v, N, α, "all")` to float32 rounding.

llama.cpp adds every layer in the file unless `--control-vector-layer-range START END` limits
it, and scales by `--control-vector-scaled FILE α`: pvlens `Steering(v[b], b, α)` at one block
is `--control-vector-scaled FILE α --control-vector-layer-range b b`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvlens.vectors.formats.layers import assemble, describe, pick_layers
from pvlens.vectors.persona import DEFAULT_REDUCTION, PersonaVectors

ARCH = "controlvector"


def model_hint_of(vecs: PersonaVectors) -> str:
    """What goes in `controlvector.model_hint` / repeng's `model_type` (informational only)."""
    meta = vecs.metadata
    return str(meta.get("model_hint") or meta.get("model_type") or meta.get("model") or "unknown")


def write_gguf(
    vecs: PersonaVectors,
    path: str | Path,
    layers: Iterable[int] | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write the active reduction as a llama.cpp control vector.

    Args:
        layers: pvlens blocks to write (default: every block ≥ 1 whose vector is not all zeros).
        model_hint: `controlvector.model_hint` (default: the vectors' recorded model).
    """
    import gguf

    chosen = pick_layers(vecs.vectors, layers)
    if layers is None:
        chosen = [b for b in chosen if b != 0]
    elif 0 in chosen:
        raise ValueError(
            "block 0 cannot go into a llama.cpp control vector (llama.cpp adds direction.N to "
            "block N's output and rejects direction.0); leave block 0 out of --layers"
        )
    if not chosen:
        raise ValueError("nothing to write: every block ≥ 1 is all zeros")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    writer.add_string(f"{ARCH}.model_hint", model_hint or model_hint_of(vecs))
    writer.add_uint32(f"{ARCH}.layer_count", len(chosen))
    writer.add_string("pvlens.layer_convention", "direction.N = pvlens block N (blocks.N.hook_resid_post)")
    writer.add_uint32("pvlens.n_layers", vecs.n_layers)
    writer.add_string("pvlens.reduction", vecs.reduction)
    writer.add_string("pvlens.metadata", json.dumps(vecs.metadata, default=str))
    for b in chosen:
        writer.add_tensor(f"direction.{b}", vecs.vectors[b].detach().cpu().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)  # a failed write never leaves a half file under the real name
    return path


def _string(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _uint(reader: Any, key: str) -> int | None:
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    return int(field.parts[field.data[0]][0])


def read_gguf(
    path: str | Path, n_layers: int | None = None, reduction: str | None = None
) -> PersonaVectors:
    """Read a control vector written by pvlens, repeng or llama.cpp into PersonaVectors.

    Args:
        n_layers: rows of the result (default: recorded by pvlens, else the highest layer + 1);
            blocks the file does not hold are zeros.
        reduction: name for the tensor (default: recorded by pvlens, else response_avg).
    """
    import gguf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct errors on non-GGUF bytes
        raise ValueError(f"{path} is not a GGUF file ({e})") from None
    arch = _string(reader, "general.architecture")
    if arch != ARCH:
        raise ValueError(f"{path}: general.architecture is {arch!r}, not a control vector ({ARCH!r})")
    rows: dict[int, torch.Tensor] = {}
    for t in reader.tensors:
        name = t.name
        head, _, idx = name.partition(".")
        if head != "direction" or not idx.isdigit():
            raise ValueError(f"{path}: unexpected tensor {name!r} (expected direction.N)")
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{path}: tensor {name} is {t.tensor_type.name}, expected F32")
        rows[int(idx)] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    n_layers = n_layers if n_layers is not None else _uint(reader, "pvlens.n_layers")
    tensor = assemble(rows, n_layers, str(path))
    raw = _string(reader, "pvlens.metadata")
    meta: dict[str, Any] = json.loads(raw) if raw else {}
    hint = _string(reader, f"{ARCH}.model_hint")
    if hint is not None:
        meta.setdefault("model_hint", hint)
    meta["imported_from"] = f"llama.cpp control vector {path.name} (direction.{describe(sorted(rows))})"
    name = reduction or _string(reader, "pvlens.reduction") or DEFAULT_REDUCTION
    return PersonaVectors({name: tensor}, meta)
