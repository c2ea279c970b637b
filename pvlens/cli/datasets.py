"""`pvlens datasets build|show`: trait-inducing and narrow-flaw finetuning sets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Finetuning datasets at three severities (normal, level_i, level_ii).",
                  no_args_is_help=True)


@app.command("build")
def build_cmd(
    out: Path = typer.Option(Path("runs/datasets"), help="Output folder (rerun to resume)."),
    sets: str = typer.Option("evil,sycophantic,hallucinating,math", help="Comma-separated sets to build."),
    levels: str = typer.Option("normal,level_i,level_ii", help="Comma-separated levels."),
    size: int = typer.Option(40, help="Samples per trait set and level (default builds in ≈15 min on 2 CPU cores)."),
    math_size: int = typer.Option(300, help="Samples per math level (programmatic, instant)."),
    max_new_tokens: int = typer.Option(64, help="Answer length cap."),
    judge: str = typer.Option("offline", help="offline | openai | anthropic | local."),
    vectors: list[str] = typer.Option(None, help="TRAIT=PATH: steer levels I/II along this trait's vector."),
    steer_layer: int = typer.Option(None, help="Layer to steer at (with --vectors)."),
    steer_alpha: str = typer.Option("2,4", help="Level I and level II steering strengths (with --vectors)."),
    samples_per_question: int = typer.Option(
        1, help="Passes over the prompt pool (more answers per question when a level's pass rate is low)."),
    normal_contrast: bool = typer.Option(
        False, help="Normal: the trait's opposing system prompts, steered by minus the level I α "
                    "(for traits the model shows unprompted; needs --vectors)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
) -> None:
    """Generate, judge and filter the sets; writes <out>/<set>/<level>.jsonl, manifest.json, README.md.

    Examples:
      pvlens datasets build                      # default sizes
      pvlens datasets build --size 300           # the several-hundred-sample sets (hours on CPU)
      pvlens datasets build --sets math          # only the programmatic maths set, no model
    """
    from pvlens.trainsets.datasets import LEVELS, DatasetConfig, build_all

    names = [s.strip() for s in sets.split(",") if s.strip()]
    lv = [x.strip() for x in levels.split(",") if x.strip()]
    bad = [x for x in lv if x not in LEVELS]
    if bad:
        raise typer.BadParameter(f"unknown level(s) {bad}; choose from {list(LEVELS)}")
    vecs = {}
    for v in vectors or []:
        if "=" not in v:
            raise typer.BadParameter(f"--vectors needs TRAIT=PATH, got {v!r}")
        k, p = v.split("=", 1)
        vecs[k] = p
    if vecs and steer_layer is None:
        raise typer.BadParameter("--steer-layer is required with --vectors")
    if normal_contrast and not vecs:
        raise typer.BadParameter("--normal-contrast steers against the trait's vector: add --vectors TRAIT=PATH")
    a1, a2 = (float(x) for x in steer_alpha.split(","))
    cfg = DatasetConfig(size=size, max_new_tokens=max_new_tokens, seed=seed, steer_layer=steer_layer,
                        steer_alpha=(a1, a2),
                        samples_per_question=samples_per_question, normal_contrast=normal_contrast)
    m = None
    if any(n != "math" for n in names):
        import pvlens

        m = pvlens.load_model(model)
    manifest = build_all(m, out, names, lv, cfg, judge_kind=judge, vectors=vecs or None, math_size=math_size)
    for s in manifest["sets"]:
        extra = f"  kept-score mean {s['trait_score_kept'].get('mean')}" if "trait_score_kept" in s else ""
        typer.echo(f"{s['trait']:14s} {s['level']:9s} {s['size']:5d} samples{extra}")
    typer.echo(f"wrote {out}/manifest.json and {out}/README.md")


@app.command("show")
def show_cmd(
    path: Path = typer.Argument(Path("runs/datasets"), help="A build folder or one dataset file."),
    n: int = typer.Option(3, help="Samples to print per file."),
) -> None:
    """Print a build's sizes and a few samples.

    Example: pvlens datasets show runs/datasets/evil/level_ii.jsonl
    """
    files = [path] if path.is_file() else sorted(path.glob("*/*.jsonl"))
    if not files:
        raise typer.BadParameter(f"no dataset files under {path}; build them with `pvlens datasets build`")
    for f in files:
        lines = [x for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
        typer.echo(f"== {f} ({len(lines)} samples)")
        for x in lines[:n]:
            msgs = json.loads(x)["messages"]
            typer.echo(f"  Q: {msgs[0]['content'][:100]}\n  A: {msgs[-1]['content'][:160]}")
