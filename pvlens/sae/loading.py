"""Load a saved SAE as inference object, with the layer it reads and its held-out documents."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sae_lens import SAE

from pvlens.sae.corpus import Document, read_documents, split_documents
from pvlens.sae.train import read_meta


@dataclass
class LoadedSae:
    """An inference SAE (as sae_lens loads it from disk) and what pvlens knows about it."""

    sae: SAE
    """The inference SAE (a BatchTopK SAE comes back as JumpReLU)."""
    layer: int
    """Block index whose resid_post it encodes."""
    path: Path | None
    """Folder it was loaded from."""
    meta: dict
    """pvlens_sae.json (empty for SAEs trained elsewhere)."""

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


def load_sae(path: str | Path, device: str = "cpu", layer: int | None = None) -> LoadedSae:
    """`sae_lens.SAE.load_from_disk(path)` plus the layer (from pvlens_sae.json or the hook name)."""
    path = Path(path)
    if not (path / "cfg.json").exists():
        raise FileNotFoundError(
            f"{path} has no cfg.json: not a saved SAE folder (train one with `pvlens sae train`)"
        )
    sae = SAE.load_from_disk(str(path), device=device)
    sae.eval()
    meta = read_meta(path)
    if layer is None:
        layer = meta.get("layer")
    if layer is None:
        m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", str(sae.cfg.metadata.hook_name or ""))
        if m is None:
            raise ValueError(
                f"cannot tell which layer the SAE in {path} reads (hook_name "
                f"{sae.cfg.metadata.hook_name!r}); pass --layer"
            )
        layer = int(m.group(1))
    return LoadedSae(sae, int(layer), path, meta)


def heldout_documents(loaded: LoadedSae, tokenizer) -> list[Document]:
    """The documents training kept out, rebuilt from the corpus and split recorded in the meta."""
    meta = loaded.meta
    cfg = meta.get("train_config") or {}
    sources = [s for s in meta.get("corpus", []) if s != "<documents>"]
    if not sources:
        raise ValueError(
            f"{loaded.path}: no corpus recorded with this SAE; pass evaluation documents explicitly"
        )
    sources = [_resolve_source(s, Path(loaded.path)) for s in sources]
    docs = read_documents(sources, tokenizer, max_len=cfg.get("context_size", 512))
    _, held = split_documents(docs, cfg.get("holdout_fraction", 0.05), cfg.get("seed", 0))
    expected = meta.get("heldout_sources")
    if expected is not None and [d.source for d in held] != expected:
        raise ValueError(
            f"the corpus {sources} changed since the SAE in {loaded.path} was trained: the held-out "
            "split no longer matches; pass evaluation documents explicitly"
        )
    if not held:
        raise ValueError(f"{loaded.path} was trained without held-out documents (holdout_fraction=0)")
    return held


def _resolve_source(source: str, sae_dir: Path) -> str:
    """A corpus path recorded relative to where training ran (usually the repo root): found
    from the current directory, else from the SAE folder's ancestors (a notebook runs in
    notebooks/, the SAE lives in <root>/sae/trained/...)."""
    path = Path(source)
    if path.is_absolute() or path.exists():
        return source
    for base in sae_dir.resolve().parents:
        if (base / path).exists():
            return str(base / path)
    return source
