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
        layer = layer_from_hook(str(sae.cfg.metadata.hook_name or ""))
    if layer is None:
        raise ValueError(
            f"cannot tell which layer the SAE in {path} reads (hook_name "
            f"{sae.cfg.metadata.hook_name!r}); pass --layer"
        )
    return LoadedSae(sae, int(layer), path, meta)


def heldout_documents(loaded: LoadedSae, tokenizer) -> list[Document]:
    """The documents training kept out, rebuilt from the corpus and split recorded in the meta."""
    held = recorded_split(loaded, tokenizer)[1]
    if not held:
        raise ValueError(f"{loaded.path} was trained without held-out documents (holdout_fraction=0)")
    return held


def training_documents(loaded: LoadedSae, tokenizer) -> list[Document]:
    """The documents the SAE was trained on (the recorded split's training part)."""
    return recorded_split(loaded, tokenizer)[0]


def recorded_split(loaded: LoadedSae, tokenizer) -> tuple[list[Document], list[Document]]:
    """(training, held-out) documents, rebuilt from the corpus and split recorded at training;
    an error if the corpus changed since (the held-out sources no longer match)."""
    meta = loaded.meta
    cfg = meta.get("train_config") or {}
    sources = [s for s in meta.get("corpus", []) if s != "<documents>"]
    if not sources:
        raise ValueError(
            f"{loaded.path}: no corpus recorded with this SAE; pass evaluation documents explicitly"
        )
    sources = [_resolve_source(s, Path(loaded.path)) for s in sources]
    docs = read_documents(sources, tokenizer, max_len=cfg.get("context_size", 512))
    train, held = split_documents(docs, cfg.get("holdout_fraction", 0.05), cfg.get("seed", 0))
    expected = meta.get("heldout_sources")
    if expected is not None and [d.source for d in held] != expected:
        raise ValueError(
            f"the corpus {sources} changed since the SAE in {loaded.path} was trained: the held-out "
            "split no longer matches; pass evaluation documents explicitly"
        )
    return list(train), list(held)


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


# --- pretrained SAEs (sae_lens registry / Hugging Face) -----------------------------------------


def layer_from_hook(hook_name: str) -> int | None:
    """The block whose resid_post a hook reads: `blocks.L.hook_resid_post` → L, and
    `blocks.L.hook_resid_pre` → L-1 (the same tensor); None for other hooks."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(post|pre)", hook_name or "")
    if m is None:
        return None
    layer = int(m.group(1))
    return layer if m.group(2) == "post" else (layer - 1 if layer > 0 else None)


def split_sae_spec(spec: str) -> tuple[str, str]:
    """'RELEASE/ID' → (release, sae_id). A release known to sae_lens's directory may be followed
    by an id with slashes (gemma-scope style); otherwise a Hugging Face repo id 'owner/repo'
    takes the first two parts when there are three or more."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    parts = spec.split("/")
    if len(parts) < 2 or not all(parts):
        from pvlens.sae.shipped import shipped_sae_names

        raise ValueError(f"--sae {spec!r}: expected a saved SAE folder, a shipped SAE name "
                         f"({', '.join(shipped_sae_names()) or 'none shipped'}; `pvlens sae list`) "
                         "or RELEASE/ID (sae_lens registry)")
    known = get_pretrained_saes_directory()
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in known:
            return "/".join(parts[:i]), "/".join(parts[i:])
    cut = 2 if len(parts) >= 3 else 1
    return "/".join(parts[:cut]), "/".join(parts[cut:])


def local_converter(root: str | Path):
    """A sae_lens converter that reads `<root>/<repo_id>/<folder_name>/{cfg.json,
    sae_weights.safetensors}` (sae_lens's on-disk format) instead of downloading: a local mirror
    of hub SAEs, and the offline test of the `from_pretrained` route."""
    from sae_lens.loading.pretrained_sae_loaders import (
        get_sae_lens_config_from_disk,
        read_sae_components_from_disk,
    )

    def convert(repo_id: str, folder_name: str, device: str = "cpu", force_download: bool = False,
                cfg_overrides: dict | None = None):
        folder = Path(root) / repo_id / folder_name
        if not (folder / "cfg.json").exists():
            raise FileNotFoundError(f"no SAE in sae_lens format at {folder} (cfg.json missing)")
        cfg = get_sae_lens_config_from_disk(folder, device, cfg_overrides)
        cfg, state = read_sae_components_from_disk(cfg, folder / "sae_weights.safetensors", device)
        return cfg, state, None

    return convert


def load_pretrained(
    release: str, sae_id: str, device: str = "cpu", layer: int | None = None, converter=None,
) -> LoadedSae:
    """`sae_lens.SAE.from_pretrained(release, sae_id)` (needs the hub unless `converter` reads
    local files, see `local_converter`), with the layer from its hook name."""
    sae = SAE.from_pretrained(release, sae_id, device=device, converter=converter)
    sae.eval()
    hook = str(sae.cfg.metadata.hook_name or "")
    layer = layer if layer is not None else layer_from_hook(hook)
    if layer is None:
        raise ValueError(f"SAE {release}/{sae_id} reads {hook!r}, not a residual stream hook; pass --layer")
    return LoadedSae(sae, int(layer), None, {"release": release, "sae_id": sae_id, "hook_name": hook})


def resolve_sae(spec: str | Path, device: str = "cpu", layer: int | None = None) -> LoadedSae:
    """A saved SAE folder, the short name of a shipped SAE (`pvlens sae list`), or 'RELEASE/ID'
    from sae_lens's registry (`$PVLENS_SAE_MIRROR` set: read from that local mirror instead of
    the hub)."""
    import os

    from pvlens.sae.shipped import shipped_sae_names, shipped_sae_path

    if Path(spec).exists():
        return load_sae(spec, device=device, layer=layer)
    if str(spec) in shipped_sae_names():
        return load_sae(shipped_sae_path(str(spec)), device=device, layer=layer)
    release, sae_id = split_sae_spec(str(spec))
    mirror = os.environ.get("PVLENS_SAE_MIRROR")
    return load_pretrained(release, sae_id, device, layer, local_converter(mirror) if mirror else None)
