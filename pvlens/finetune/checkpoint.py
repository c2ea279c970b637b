"""Training checkpoints that survive a kill at any moment and never run code when loaded.

A checkpoint folder holds the adapter (`adapter.safetensors`), every tensor of the trainer
state — optimiser moments, step counters, RNG states — in `trainer_tensors.safetensors`, and
the rest (step, losses, scheduler, optimiser hyper-parameters, Python/numpy RNG) as JSON in
`trainer_state.json`. Nothing is unpickled: a planted file can at worst fail to parse. The
folder is written to a temporary sibling and swapped in by rename.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pvlens.errors import PvlensError
from pvlens.io.atomic import read_json_checked, write_json_atomic

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "trainer_tensors.safetensors"
WEIGHTS_FILE = "adapter.safetensors"
PICKLE_FILE = "trainer_state.pt"
"""The pickle-based state file of pvlens ≤ 0.1; never loaded (unpickling can run code)."""


class UnsafeCheckpointError(PvlensError):
    """A checkpoint folder holds a pickle file, which pvlens refuses to load."""


def rng_state() -> dict[str, Any]:
    """Torch, Python, numpy (and CUDA) random states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- a JSON + safetensors codec for nested state ----------------------------------------------

def encode_state(value: Any, tensors: dict[str, torch.Tensor], path: str = "s") -> Any:
    """JSON-able form of `value`; its tensors and arrays move into `tensors` under dotted keys.

    Tuples and dicts with non-string keys (optimizer `state` is keyed by int) are tagged so
    that `decode_state` gives back exactly the same structure.
    """
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().clone().contiguous()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(value.astype(np.int64) if value.dtype == np.uint32
                                         else value.copy())
        return {"__ndarray__": path, "dtype": str(value.dtype)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode_state(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode_state(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {"__items__": [[encode_state(k, tensors, f"{path}.k{i}"),
                               encode_state(v, tensors, f"{path}.{i}")]
                              for i, (k, v) in enumerate(value.items())]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} at {path} in a checkpoint")


def decode_state(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of `encode_state`."""
    if isinstance(value, list):
        return [decode_state(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(value["dtype"])
    if "__tuple__" in value:
        return tuple(decode_state(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {decode_state(k, tensors): decode_state(v, tensors) for k, v in value["__items__"]}
    return {k: decode_state(v, tensors) for k, v in value.items()}


# --- folders -----------------------------------------------------------------------------------

def save(directory: Path, adapter: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write `directory` atomically (an interrupted save leaves the previous one intact)."""
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(adapter, str(tmp / WEIGHTS_FILE))
    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_state(state, tensors)
    save_file(tensors, str(tmp / TENSORS_FILE))
    write_json_atomic(tmp / STATE_FILE, encoded)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def refuse_pickles(directory: Path) -> None:
    """Raise if `directory` or its `.old` sibling holds a pickle state file."""
    for cand in (directory, directory.with_name(directory.name + ".old")):
        if (cand / PICKLE_FILE).exists():
            raise UnsafeCheckpointError(
                f"{cand / PICKLE_FILE} is a pickle checkpoint (pvlens ≤ 0.1 or not written by pvlens); "
                "loading it could run arbitrary code, so pvlens will not resume from it. Delete "
                f"{cand}, or start over with resume=False (--no-resume)."
            )


def find(directory: Path) -> Path | None:
    """The newest complete checkpoint folder (the `.old` one if a kill hit mid-swap).

    A folder holding a pickle state file is refused (UnsafeCheckpointError), never loaded.
    """
    refuse_pickles(directory)
    for cand in (directory, directory.with_name(directory.name + ".old")):
        if all((cand / name).exists() for name in (STATE_FILE, TENSORS_FILE, WEIGHTS_FILE)):
            return cand
    return None


def load(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(adapter tensors, trainer state) of a checkpoint written by `save`."""
    state = decode_state(read_json_checked(directory / STATE_FILE), load_file(str(directory / TENSORS_FILE)))
    return load_file(str(directory / WEIGHTS_FILE)), state
