"""Model families: max |Δlogits| of pvlens (TransformerLens) vs Hugging Face on the zoo's tiny
random checkpoint of each family, and of the fast engine vs TransformerLens where it applies."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pvlens.core.fingerprint import source_hash
from pvlens.replicate.registry import Context
from pvlens.replicate.tables import md_table

CORE = Path(__file__).resolve().parents[1] / "core"
MEASURED_MODULES = ("model", "families", "zoo", "engine", "tl_speedups", "batching", "chat")
"""pvlens modules the measured deltas depend on (loading, conversion, the fast engine, padding)."""


def inputs(ctx: Context) -> dict[str, Any]:
    import torch
    import transformer_lens
    import transformers

    from pvlens.core.zoo import FAMILIES

    # the checkpoints are built from seeded random weights; what changes them is the libraries,
    # and the deltas are measured on pvlens's own loading and engine code
    return {"families": list(FAMILIES), "torch": torch.__version__, "transformers": transformers.__version__,
            "transformer_lens": getattr(transformer_lens, "__version__", "?"),
            "pvlens_code": source_hash(*(CORE / f"{m}.py" for m in MEASURED_MODULES))}


def _engine_delta(model: Any) -> float | None:
    import torch

    import pvlens
    from pvlens.core.batching import left_pad
    from pvlens.core.engine import engine_for, unsupported_reason

    if unsupported_reason(model) is not None:
        return None
    chats = [pvlens.encode_prompt(model.tokenizer, p) for p in ("Hello!", "What is the capital of France? Answer briefly please.")]
    tokens, positions = left_pad(chats, model.tokenizer.pad_token_id, "cpu")
    valid = positions >= 0
    got = engine_for(model, torch.float32).forward(tokens, positions, logits="all")
    with torch.no_grad():
        ref = model(tokens, attention_mask=valid.long(), padding_side="left")
    return float((got[valid] - ref[valid]).abs().max())


def measure(family: str, root: Path) -> dict[str, Any]:
    """One family: build, load both ways, compare."""
    import torch

    import pvlens
    from pvlens.core.engine import unsupported_reason
    from pvlens.core.model import load_hf_model
    from pvlens.core.zoo import ZOO, hf_logits, make_checkpoint, zoo_tokens

    path = make_checkpoint(root, family)
    model, hf = pvlens.load_model(str(path), n_ctx=None), load_hf_model(path)[0]
    tokens = zoo_tokens(model)
    with torch.no_grad():
        delta = float((model(tokens) - hf_logits(hf, tokens)).abs().max())
    return {"family": family, "architecture": hf.config.architectures[0], "folder": ZOO[family].folder,
            "positions": int(tokens.shape[1]), "tl_vs_hf": delta, "engine_vs_tl": _engine_delta(model),
            "engine_declined": unsupported_reason(model)}


def run(ctx: Context, folder: Path) -> dict[str, Any]:
    from pvlens.core.zoo import FAMILIES

    fams = FAMILIES[:2] if ctx.quick else FAMILIES
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(f, Path(tmp)) for f in fams]
    return {"dtype": "float32", "families": rows}


def models_table(doc: dict[str, Any]) -> str:
    """docs/models.md: per family, TL vs HF and engine vs TL max |Δlogits|."""
    rows = [[f"`{r['architecture']}`", f"`{r['folder']}`", str(r["positions"]), f"{r['tl_vs_hf']:.1e}",
             f"{r['engine_vs_tl']:.1e}" if r["engine_vs_tl"] is not None else f"declined ({r['engine_declined']})"]
            for r in doc["results"]["families"]]
    return md_table(["architecture", "zoo folder name", "positions", "TL vs HF max \\|Δlogits\\|",
                     "fast engine vs TL max \\|Δlogits\\|"], rows)
