"""`pvlens datasets build|show`: trait-inducing and narrow-flaw finetuning sets."""

from __future__ import annotations

from pathlib import Path

import typer

from pvlens.cli.options import (
    DeviceOpt,
    ModelOpt,
    OverwriteOpt,
    RayOpt,
    SeedOpt,
    WorkerCpusOpt,
    WorkerGpusOpt,
    WorkersOpt,
    existing_file,
    float_list,
)

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
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    ray: RayOpt = None,
    workers: WorkersOpt = 2,
    worker_cpus: WorkerCpusOpt = 1.0,
    worker_gpus: WorkerGpusOpt = 0.0,
) -> None:
    """Generate, judge and filter the sets; writes <out>/<set>/<level>.jsonl, manifest.json, README.md.

    Examples:
      pvlens datasets build                      # default sizes
      pvlens datasets build --size 300           # the several-hundred-sample sets (hours on CPU)
      pvlens datasets build --sets math          # only the programmatic maths set, no model
      pvlens datasets build --ray --workers 2    # answers generated on a (local) Ray cluster
    """
    from pvlens.cli.ray_gen import ray_generator
    from pvlens.trainsets.datasets import DatasetConfig, build_all

    names, lv = _names(sets, levels)
    vecs = _vectors(vectors or [], steer_layer)
    if normal_contrast and not vecs:
        raise typer.BadParameter("--normal-contrast steers against the trait's vector: add --vectors TRAIT=PATH")
    alphas = float_list(steer_alpha, "--steer-alpha") or []
    if len(alphas) != 2:
        raise typer.BadParameter(f"--steer-alpha takes two numbers (level I, level II), got {steer_alpha!r}")
    cfg = DatasetConfig(size=size, max_new_tokens=max_new_tokens, seed=seed, steer_layer=steer_layer,
                        steer_alpha=(alphas[0], alphas[1]),
                        samples_per_question=samples_per_question, normal_contrast=normal_contrast)
    m = None
    if any(n != "math" for n in names):
        import pvlens

        m = pvlens.load_model(model, device=device)
    with ray_generator(ray if m is not None else None, workers, model, device, worker_cpus, worker_gpus) as gen:
        manifest = build_all(m, out, names, lv, cfg, judge_kind=judge, vectors=vecs or None,
                             math_size=math_size, overwrite=overwrite, generator=gen)
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
    from pvlens.trainsets.datasets import load_messages

    files = [path] if path.is_file() else sorted(path.glob("*/*.jsonl"))
    if not files:
        raise typer.BadParameter(f"no dataset files under {path}; build them with `pvlens datasets build`")
    for f in files:
        rows = load_messages(f)  # a bad row: an error naming file and line
        typer.echo(f"== {f} ({len(rows)} samples)")
        for msgs in rows[:n]:
            typer.echo(f"  Q: {msgs[0]['content'][:100]}\n  A: {msgs[-1]['content'][:160]}")


def _names(sets: str, levels: str) -> tuple[list[str], list[str]]:
    """The sets and levels asked for; unknown levels are refused."""
    from pvlens.trainsets.datasets import LEVELS

    names = [s.strip() for s in sets.split(",") if s.strip()]
    lv = [x.strip() for x in levels.split(",") if x.strip()]
    bad = [x for x in lv if x not in LEVELS]
    if bad:
        raise typer.BadParameter(f"unknown level(s) {bad}; choose from {list(LEVELS)}")
    return names, lv


def _vectors(items: list[str], steer_layer: int | None) -> dict[str, str]:
    """TRAIT=PATH pairs, each file read and checked at the steering layer before a model loads."""
    from pvlens.vectors.coerce import as_persona_vectors, direction

    vecs = {}
    for v in items:
        if "=" not in v:
            raise typer.BadParameter(f"--vectors needs TRAIT=PATH, got {v!r}")
        k, p = v.split("=", 1)
        existing_file(Path(p), "vectors file")
        vecs[k] = p
    if vecs and steer_layer is None:
        raise typer.BadParameter("--steer-layer is required with --vectors")
    for k, p in vecs.items():
        try:
            direction(as_persona_vectors(p), steer_layer)
        except Exception as e:  # a garbage file, a bad layer, a non-finite vector: name the file
            raise typer.BadParameter(f"--vectors {k}={p}: {e}") from None
    return vecs
