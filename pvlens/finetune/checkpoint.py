"""Training checkpoints that survive a kill at any moment: adapter + optimiser + scheduler +
RNG + step, written to a temporary folder and swapped in by rename."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "adapter.safetensors"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, adapter: dict[str, torch.Tensor], state: dict) -> None:
    """Write `directory` atomically (an interrupted save leaves the previous one intact)."""
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(adapter, str(tmp / WEIGHTS_FILE))
    torch.save(state, tmp / STATE_FILE)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def find(directory: Path) -> Path | None:
    """The newest complete checkpoint folder (the `.old` one if a kill hit mid-swap)."""
    for cand in (directory, directory.with_name(directory.name + ".old")):
        if (cand / STATE_FILE).exists() and (cand / WEIGHTS_FILE).exists():
            return cand
    return None


def load(directory: Path) -> tuple[dict[str, torch.Tensor], dict]:
    state = torch.load(directory / STATE_FILE, weights_only=False)  # our own file: RNG tuples
    return load_file(str(directory / WEIGHTS_FILE)), state
