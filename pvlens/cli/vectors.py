"""`pvlens extract`, `pvlens sweep`, `pvlens compare`, `pvlens demo`, and `pvlens vectors export|import`
(conversions to and from llama.cpp, repeng, steering-vectors and the paper's files).

Every command checks its arguments (trait, preset, numbers, layers, input files) before it
loads a model, so a mistake costs a one-line error, not a model load and a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from pvlens.cli.options import (
    DeviceOpt,
    JudgeOpt,
    LayerOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    RayOpt,
    SeedOpt,
    WorkerCpusOpt,
    WorkerGpusOpt,
    WorkersOpt,
    float_list,
    int_list,
)
from pvlens.errors import InputError

T = TypeVar("T")


def _valid(build: Callable[[], T], what: str) -> T:
    """Build a config; a pydantic error becomes one InputError line naming the field."""
    try:
        return build()
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise InputError(f"invalid {what}: {problems}") from None


def _at_least_one(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise InputError(f"{option} must be at least 1, got {value}")


def extract_cmd(
    trait: Annotated[str, typer.Argument(help="Built-in trait name or a trait .json/.yaml file.")],
    out: OutOpt,
    model: ModelOpt = None,
    judge: JudgeOpt = "offline",
    preset: Annotated[str, typer.Option(help="cpu (≈15 min here) | paper (GPU) | tiny (smoke test).")] = "cpu",
    samples: Annotated[int | None, typer.Option(help="Override samples per question × instruction × polarity.")] = None,
    trait_threshold: Annotated[float | None, typer.Option(help="Override the trait-score threshold (50).")] = None,
    coherence_threshold: Annotated[float | None, typer.Option(help="Override the coherence threshold (50).")] = None,
    pairing: Annotated[str | None, typer.Option(help="pair (paper) | sample.")] = None,
    method: Annotated[list[str] | None, typer.Option("--method", help="Extra direction methods saved next to the mean difference: pca | probe (repeatable).")] = None,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    ray: RayOpt = None,
    workers: WorkersOpt = 2,
    worker_cpus: WorkerCpusOpt = 1.0,
    worker_gpus: WorkerGpusOpt = 0.0,
) -> None:
    """Extract a persona vector for every layer from contrastive, judged rollouts.

    Examples:
      pvlens extract evil --out runs/evil
      pvlens extract evil --out runs/evil --ray auto --workers 8   (rollouts on a Ray cluster)
    """
    from pvlens.cli.ray_gen import ray_generator
    from pvlens.core.model import load_model
    from pvlens.judges import load_judge
    from pvlens.traits import load_trait
    from pvlens.vectors.extract import ExtractConfig, extract

    overrides = {k: v for k, v in {"samples_per_pair": samples, "trait_threshold": trait_threshold,
                 "coherence_threshold": coherence_threshold, "pairing": pairing, "seed": seed,
                 "methods": ("mean", *method) if method else None}.items()
                 if v is not None}
    cfg = _valid(lambda: ExtractConfig.preset(preset, **overrides), "extraction settings")
    spec = load_trait(trait)
    scorer = load_judge(judge, trait=spec)
    m = load_model(model, device=device)
    with ray_generator(ray, workers, model, device, worker_cpus, worker_gpus) as gen:
        vecs = extract(m, spec, out, judge=scorer, cfg=cfg, model_name=model, overwrite=overwrite, generator=gen)
    c = vecs.metadata["counts"]
    typer.echo(f"kept pos {c['pos_kept']}/{c['pos_total']}, neg {c['neg_kept']}/{c['neg_total']}")
    typer.echo(f"wrote {out}/vectors.safetensors ({vecs.n_layers} layers × {vecs.d_model})")


def sweep_cmd(
    vectors: Annotated[Path, typer.Option(help="Extraction folder or vectors.safetensors.")],
    trait: Annotated[str | None, typer.Option(help="Trait (default: the one in the vectors' metadata).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: <vectors folder>/sweep; a rerun with the same inputs resumes).")] = None,
    layers: Annotated[str | None, typer.Option(help="Comma-separated block indices (default: five blocks around the middle).")] = None,
    alphas: Annotated[str, typer.Option(help="Comma-separated strengths (raw-vector units).")] = "0,1,2,4,6,8",
    questions: Annotated[int, typer.Option(help="Evaluation questions per cell.")] = 10,
    samples: Annotated[int, typer.Option(help="Samples per question per cell.")] = 2,
    incremental: Annotated[bool, typer.Option(
        "--incremental", help="Steer every block with the paper's incremental vectors (top push α·v_L); "
        "cells keyed by α, layer 'all'; --layers is ignored.")] = False,
    judge: JudgeOpt = "offline",
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Layer × α grid: trait score and coherence per cell, a heatmap and the automatic choice.

    Example: pvlens sweep --vectors runs/evil --layers 9,12,15,18 --alphas 0,2,4,6,8
    """
    from pvlens.core.model import load_model
    from pvlens.io.report import write_report
    from pvlens.judges import load_judge
    from pvlens.traits import load_trait
    from pvlens.vectors import PersonaVectors
    from pvlens.vectors.sweep import SweepConfig, check_layers, sweep

    _at_least_one(questions, "--questions")
    _at_least_one(samples, "--samples")
    layer_list, alpha_list = int_list(layers, "--layers"), float_list(alphas, "--alphas")
    if not alpha_list:
        raise InputError("--alphas needs at least one strength, e.g. --alphas 0,2,4")
    cfg = _valid(lambda: SweepConfig(layers=layer_list, alphas=alpha_list, n_questions=questions,
                                     samples=samples, incremental=incremental), "sweep settings")
    vecs = PersonaVectors.load(vectors)
    if layer_list:
        check_layers(layer_list, vecs.n_layers)
    trait = trait or vecs.trait
    if not trait:
        raise InputError(f"{vectors} names no trait in its metadata; pass --trait")
    spec = load_trait(trait)
    scorer = load_judge(judge, trait=spec)
    run_dir = vectors if vectors.is_dir() else vectors.parent
    out = out or run_dir / "sweep"
    m = load_model(model, device=device)
    result = sweep(m, vecs, spec, out, judge=scorer, cfg=cfg, overwrite=overwrite)
    for r in result.rows:
        typer.echo(f"layer {str(r['layer']):>3}  α {r['alpha']:>5g}  trait {r['trait']:6.1f}  coherence {r['coherence']:6.1f}")
    typer.echo(f"choice: layer {result.best_layer}, alpha {result.best_alpha}")
    if (run_dir / "means.safetensors").exists() and not incremental:  # the report's heatmap is per block
        typer.echo(f"report: {write_report(run_dir, out)}")


def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Two or more extraction folders / vector files.")],
    layer: LayerOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write plots and cosines.json.")] = Path("runs/compare"),
) -> None:
    """Cosines between traits' vectors per layer (heatmap) and a PCA of them.

    Example: pvlens compare runs/evil runs/humorous runs/impolite --layer 15
    """
    from pvlens.io import viz
    from pvlens.io.atomic import write_json_atomic
    from pvlens.vectors import PersonaVectors
    from pvlens.vectors.compare import cosine_matrix, names, pca

    if len(runs) < 2:
        raise InputError(f"compare needs two or more vector folders or files, got {len(runs)}")
    vecs = [PersonaVectors.load(p) for p in runs]
    n_layers = vecs[0].n_layers
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise InputError(f"--layer {layer} is out of range: these vectors have layers 0..{n_layers - 1}")
    labels = names(vecs)
    cos = cosine_matrix(vecs)
    viz.matrix(cos[layer].numpy(), labels, out / f"cosine_layer{layer}.png", f"cosine at layer {layer}")
    coords, explained = pca(vecs, layer)
    ys = coords[:, 1].tolist() if coords.shape[1] > 1 else [0.0] * len(labels)
    viz.scatter(coords[:, 0].tolist(), ys, out / f"pca_layer{layer}.png",
                f"PCA of trait vectors, layer {layer}", f"PC1 ({explained[0]:.0%})",
                f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2", labels)
    write_json_atomic(out / "cosines.json", {"traits": labels, "per_layer": cos.tolist()}, indent=None)
    typer.echo(f"cosines at layer {layer}:")
    for i, a in enumerate(labels):
        typer.echo("  " + a.ljust(14) + " ".join(f"{cos[layer, i, j]:6.2f}" for j in range(len(labels))))
    typer.echo(f"wrote {out}")


def demo_cmd(
    out: OutOpt = Path("runs/demo"),
    trait: Annotated[str, typer.Option(help="Trait to extract.")] = "evil",
    preset: Annotated[str, typer.Option(help="Extraction preset.")] = "cpu",
    model: ModelOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """The main job on the default model: extract a trait, sweep layer × α, write a report."""
    from pvlens.core.model import load_model
    from pvlens.io.report import write_report
    from pvlens.traits import load_trait
    from pvlens.vectors.extract import ExtractConfig, extract
    from pvlens.vectors.sweep import SweepConfig, sweep

    cfg = ExtractConfig.preset(preset)
    spec = load_trait(trait)
    m = load_model(model)
    vecs = extract(m, spec, out, cfg=cfg, model_name=model, overwrite=overwrite)
    result = sweep(m, vecs, spec, out / "sweep", cfg=SweepConfig(), overwrite=overwrite)
    typer.echo(f"choice: layer {result.best_layer}, alpha {result.best_alpha}")
    typer.echo(f"report: {write_report(out, out / 'sweep')}")


vectors_app = typer.Typer(
    help="Convert persona vectors to and from other tools' formats (llama.cpp GGUF, repeng, "
    "steering-vectors, the paper's .pt).",
    no_args_is_help=True,
)


def _fail(message: str) -> NoReturn:
    """Bad input: the CLI's error boundary prints it as one line (exit 2)."""
    raise InputError(message)


def _load_source(source: str, reduction: str | None):
    from pvlens.vectors import PersonaVectors

    path = Path(source)
    if path.exists():
        return PersonaVectors.load(path, reduction)
    if "/" not in source and not path.suffix:
        return PersonaVectors.builtin(source, reduction=reduction)
    raise FileNotFoundError(f"{source} does not exist (give a run folder, a vectors file or a shipped trait)")


@vectors_app.command("export")
def export_cmd(
    source: str = typer.Argument(..., help="Run folder, vectors .safetensors / paper .pt, or a shipped trait name."),
    format: str = typer.Option(..., "--format", "-f", help="gguf | repeng | steering-vectors | paper-pt."),
    out: Path = typer.Option(None, help="Output file (default: <trait>.<format suffix> here)."),
    layers: str = typer.Option(None, help="Comma-separated pvlens block indices (default: all the format holds)."),
    reduction: str = typer.Option(None, help="Which reduction to write (default: the active one, response_avg)."),
    model_hint: str = typer.Option(None, help="controlvector.model_hint / repeng model_type (default: recorded model)."),
) -> None:
    """Write vectors for another tool. pvlens block b is direction.b in GGUF, layer id b in repeng
    and steering-vectors, and row b+1 of the paper's .pt.

    Example: pvlens vectors export runs/evil --format gguf --layers 15 --out evil.gguf
    """
    from pvlens.vectors.formats import FORMATS, SUFFIX, export_vectors

    if format not in FORMATS:
        raise typer.BadParameter(f"unknown format {format!r}; choose from {', '.join(FORMATS)}", param_hint="--format")
    picked = int_list(layers, "--layers") or None
    try:
        vecs = _load_source(source, reduction)
        name = vecs.trait or Path(source).stem or "vectors"
        target = out or Path(f"{name}{SUFFIX[format]}")
        path = export_vectors(vecs, target, format, picked, model_hint)
    except (ValueError, FileNotFoundError, ImportError, KeyError, TypeError) as e:
        _fail(str(e).strip("'\""))
    typer.echo(f"wrote {path} ({format}, {vecs.reduction}, {vecs.n_layers} blocks × {vecs.d_model})")


@vectors_app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="A GGUF control vector, steering-vectors .pt, or the paper's .pt."),
    out: Path = typer.Option(..., help="pvlens vectors file to write (.safetensors)."),
    format: str = typer.Option("auto", "--format", "-f", help="auto | gguf | repeng | steering-vectors | paper-pt."),
    n_layers: int = typer.Option(None, help="Blocks of the model (default: recorded, else highest layer + 1)."),
    reduction: str = typer.Option(None, help="Name for the imported tensor (default: response_avg)."),
    trait: str = typer.Option(None, help="Trait name to record in the metadata."),
) -> None:
    """Read another tool's vector file into pvlens's safetensors (blocks it lacks are zeros).

    Example: pvlens vectors import evil.gguf --out runs/evil-llamacpp/vectors.safetensors
    """
    from pvlens.vectors import PersonaVectors
    from pvlens.vectors.formats import import_vectors

    if out.suffix != ".safetensors":
        raise typer.BadParameter(f"{out} should end in .safetensors (pvlens's own format)", param_hint="--out")
    try:
        vecs = import_vectors(file, format, n_layers, reduction)
    except (ValueError, FileNotFoundError, ImportError, KeyError, TypeError) as e:
        _fail(str(e).strip("'\""))
    if trait:
        vecs = PersonaVectors(vecs.tensors, {**vecs.metadata, "trait": trait}, vecs.reduction)
    vecs.save(out)
    present = int((vecs.vectors.abs().sum(-1) > 0).sum())
    typer.echo(f"wrote {out} ({vecs.n_layers} blocks × {vecs.d_model}, {present} non-zero, {vecs.reduction})")
