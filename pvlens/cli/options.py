"""Options and parsers shared by every `pvlens` command, declared once.

Commands annotate parameters with these aliases (`model: ModelOpt = None`) instead of restating
`typer.Option(...)` with its help text, and parse comma lists with `int_list` / `float_list`,
which fail with a message naming the option.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model: a local HF folder or hub name (default: the offline SmolLM2-135M-Instruct)."),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1, mps (default: best available).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (a rerun with the same inputs resumes).")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Discard results in --out that were made with other inputs.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Base seed of sampling.")]
LayerOpt = Annotated[
    int | None, typer.Option("--layer", "-l", help="Block index (TransformerLens blocks.L.hook_resid_post; default: the middle block).")
]
JudgeOpt = Annotated[str, typer.Option("--judge", help="offline | local | openai:MODEL | anthropic:MODEL.")]


def _split(text: str | None) -> list[str]:
    return [] if text is None else [x.strip() for x in text.split(",") if x.strip()]


def int_list(text: str | None, option: str) -> list[int] | None:
    """'12,15,18' → [12, 15, 18]; None stays None; a bad item names the option."""
    if text is None:
        return None
    try:
        return [int(x) for x in _split(text)]
    except ValueError:
        raise typer.BadParameter(f"{option} takes whole numbers separated by commas, got {text!r}") from None


def float_list(text: str | None, option: str) -> list[float] | None:
    """'0,2,4.5' → [0.0, 2.0, 4.5]; non-finite values are refused (they steer to garbage)."""
    if text is None:
        return None
    try:
        values = [float(x) for x in _split(text)]
    except ValueError:
        raise typer.BadParameter(f"{option} takes numbers separated by commas, got {text!r}") from None
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise typer.BadParameter(f"{option} must be finite, got {bad[0]}")
    return values


def finite(value: float, option: str) -> float:
    """Refuse NaN/inf for a single numeric option (e.g. --alpha)."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{option} must be a finite number, got {value}")
    return value


def existing_file(path: Path, what: str) -> Path:
    """Check an input file exists before any model is loaded."""
    if not path.exists():
        raise typer.BadParameter(f"{what} {path} does not exist")
    return path


RayOpt = Annotated[
    str | None,
    typer.Option("--ray", metavar="[ADDRESS]",
                 help="Generate on a Ray cluster: an address (auto, ray://host:10001), or none / 'local' to "
                      "start a local one. Same replies and resume state as without. Needs the ray extra (pip install pvlens\\[ray])."),
]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="With --ray: actors in the pool (each loads the model once).")]
WorkerCpusOpt = Annotated[float, typer.Option("--worker-cpus", min=0.01,
                                              help="With --ray: CPUs per actor (its torch threads).")]
WorkerGpusOpt = Annotated[float, typer.Option("--worker-gpus", min=0.0,
                                              help="With --ray: GPUs per actor (fractions share a GPU; >0 loads the model on cuda).")]
