"""The SAEs that ship with pvlens, loaded by a short name from a checkout or an installed wheel.

They live in `pvlens/data/saes/<name>/` in sae_lens's on-disk format (`cfg.json`,
`sae_weights.safetensors`, so `sae_lens.SAE.load_from_disk` reads them) with pvlens's record
(`pvlens_sae.json`: layer, training config, corpus manifest) and their held-out evaluation
(`eval.json`). Package data, so `pip install pvlens` gets them too. `publish_sae` copies a trained
folder there (the weights and records only, not checkpoints or logs).
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from pvlens.io.atomic import write_json_atomic

SAE_FILES = ("cfg.json", "sae_weights.safetensors", "pvlens_sae.json")
"""What a shipped SAE folder holds (plus `eval.json` when it was evaluated)."""


def shipped_root() -> Path:
    """The package folder that holds the shipped SAEs."""
    return Path(str(resources.files("pvlens"))) / "data" / "saes"


def shipped_sae_names() -> list[str]:
    """Short names of the shipped SAEs (folder names, e.g. 'smollm2-135m-layer15')."""
    root = shipped_root()
    return sorted(p.name for p in root.iterdir() if (p / "cfg.json").exists()) if root.is_dir() else []


def shipped_sae_path(name: str) -> Path:
    """The folder of the shipped SAE `name`; a clear error listing the names if there is none."""
    path = shipped_root() / name
    if not (path / "cfg.json").exists():
        names = ", ".join(shipped_sae_names()) or "none"
        raise FileNotFoundError(f"no shipped SAE named {name!r} (shipped: {names})")
    return path


def shipped_sae_summary(name: str) -> dict:
    """Layer, latents, k and the held-out metrics of a shipped SAE (for `pvlens sae list`)."""
    path = shipped_sae_path(name)
    meta = json.loads((path / "pvlens_sae.json").read_text())
    cfg = json.loads((path / "cfg.json").read_text())
    ev = json.loads((path / "eval.json").read_text()) if (path / "eval.json").exists() else {}
    d_sae = cfg.get("d_sae") or ev.get("d_sae")
    dead = ev.get("dead")
    return {"name": name, "layer": meta.get("layer"), "d_sae": d_sae,
            "k": (meta.get("train_config") or {}).get("k"), "model": meta.get("model_name"),
            "fvu": ev.get("fvu"), "l0": ev.get("l0"), "ce_loss_score": ev.get("ce_loss_score"),
            "dead_fraction": dead / d_sae if isinstance(dead, int) and d_sae else None}


def publish_sae(trained: str | Path, name: str, evaluation: dict | None = None,
                root: Path | None = None) -> Path:
    """Copy a trained SAE's weights and records into the shipped folder as `name`."""
    src, dest = Path(trained), (root or shipped_root()) / name
    missing = [f for f in SAE_FILES if not (src / f).exists()]
    if missing:
        raise FileNotFoundError(f"{src} lacks {', '.join(missing)}: not a finished `pvlens sae train` folder")
    dest.mkdir(parents=True, exist_ok=True)
    for f in SAE_FILES:
        shutil.copyfile(src / f, dest / f)
    if evaluation is not None:
        write_json_atomic(dest / "eval.json", evaluation)
    for path in dest.iterdir():  # package data: readable by whoever installs it
        path.chmod(0o644)
    return dest
