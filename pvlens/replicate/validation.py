"""Validation of the shipped vectors on the hand-written (and prompt-elicited) sets: the registry
runs `pvlens validate --layers 12,15,18 --elicit`, which keys its folder itself (check_inputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvlens.replicate.registry import Context

LAYERS = "12,15,18"


def inputs(ctx: Context) -> dict[str, Any]:
    return {"layers": LAYERS if not ctx.quick else "1", "note": "pvlens validate records its own inputs.json"}


def run(ctx: Context, folder: Path) -> dict[str, Any]:
    """Full: the documented command into `folder`. Quick: 8 rows per set, tiny model, random vectors."""
    if not ctx.quick:
        from pvlens.cli import app

        app(["validate", "--layers", LAYERS, "--elicit", "--out", str(folder)], standalone_mode=False)
        return {"file": "15.json", "files": [f"{layer}.json" for layer in LAYERS.split(",")]}
    import torch

    from pvlens.vectors.validate import EVAL_TRAITS, eval_set_path
    from pvlens.vectors.validation_report import save_layer
    from pvlens.vectors.validation_run import ValidationConfig, run_validation

    m, gen = ctx.model, torch.Generator().manual_seed(0)
    sets = {}
    for t in EVAL_TRAITS:
        sets[t] = folder / "sets" / f"{t}.jsonl"
        sets[t].parent.mkdir(parents=True, exist_ok=True)
        sets[t].write_text("".join(x + "\n" for x in eval_set_path(t).read_text().splitlines()[:8]))
    vectors = {t: torch.randn(m.cfg.n_layers, m.cfg.d_model, generator=gen) for t in EVAL_TRAITS}
    [res] = run_validation(m, [1], ValidationConfig(n_null=10, n_bootstrap=10), vectors=vectors, sets=sets)
    save_layer(res, folder)
    return {"file": "1.json", "own_auroc": {t: res.results["response_avg"][t].cells[t].auroc for t in EVAL_TRAITS},
            "n": {t: res.results["response_avg"][t].n for t in EVAL_TRAITS}}
