"""`pvlens extract`, `pvlens sweep`, `pvlens compare`, `pvlens demo`."""

from __future__ import annotations

from pathlib import Path

import typer


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",")] if text else None


def _floats(text: str | None) -> list[float] | None:
    return [float(x) for x in text.split(",")] if text else None


def extract_cmd(
    trait: str = typer.Argument(..., help="Built-in trait name or a trait .json/.yaml file."),
    out: Path = typer.Option(..., help="Output folder (rerun the same command to resume)."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    judge: str = typer.Option("offline", help="offline | openai | anthropic | local."),
    preset: str = typer.Option("cpu", help="cpu (≈15 min here) | paper (GPU) | tiny (smoke test)."),
    samples: int = typer.Option(None, help="Override samples per question × instruction × polarity."),
    trait_threshold: float = typer.Option(None, help="Override the trait-score threshold (50)."),
    coherence_threshold: float = typer.Option(None, help="Override the coherence threshold (50)."),
    pairing: str = typer.Option(None, help="pair (paper) | sample."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
    seed: int = typer.Option(0, help="Sampling seed."),
) -> None:
    """Extract a persona vector for every layer from contrastive, judged rollouts.

    Example: pvlens extract evil --out runs/evil
    """
    import pvlens
    from pvlens.judges import load_judge
    from pvlens.traits import load_trait
    from pvlens.vectors.extract import ExtractConfig, extract

    overrides = {k: v for k, v in {"samples_per_pair": samples, "trait_threshold": trait_threshold,
                 "coherence_threshold": coherence_threshold, "pairing": pairing, "seed": seed}.items()
                 if v is not None}
    cfg = ExtractConfig.preset(preset, **overrides)
    spec = load_trait(trait)
    m = pvlens.load_model(model, device=device)
    vecs = extract(m, spec, out, judge=load_judge(judge, trait=spec), cfg=cfg, model_name=model)
    c = vecs.metadata["counts"]
    typer.echo(f"kept pos {c['pos_kept']}/{c['pos_total']}, neg {c['neg_kept']}/{c['neg_total']}")
    typer.echo(f"wrote {out}/vectors.safetensors ({vecs.n_layers} layers × {vecs.d_model})")


def sweep_cmd(
    vectors: Path = typer.Option(..., help="Extraction folder or vectors.safetensors."),
    trait: str = typer.Option(None, help="Trait (default: the one in the vectors' metadata)."),
    out: Path = typer.Option(None, help="Output folder (default: <vectors folder>/sweep)."),
    layers: str = typer.Option(None, help="Comma-separated block indices (default: middle third, step 3)."),
    alphas: str = typer.Option("0,1,2,4,6,8", help="Comma-separated strengths (raw-vector units)."),
    questions: int = typer.Option(10, help="Evaluation questions per cell."),
    samples: int = typer.Option(2, help="Samples per question per cell."),
    judge: str = typer.Option("offline", help="offline | openai | anthropic | local."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
) -> None:
    """Layer × α grid: trait score and coherence per cell, a heatmap and the automatic choice.

    Example: pvlens sweep --vectors runs/evil --layers 9,12,15,18 --alphas 0,2,4,6,8
    """
    import pvlens
    from pvlens.io.report import write_report
    from pvlens.judges import load_judge
    from pvlens.vectors import PersonaVectors
    from pvlens.vectors.sweep import SweepConfig, sweep

    vecs = PersonaVectors.load(vectors)
    trait = trait or vecs.trait
    run_dir = vectors if vectors.is_dir() else vectors.parent
    out = out or run_dir / "sweep"
    cfg = SweepConfig(layers=_ints(layers), alphas=_floats(alphas), n_questions=questions, samples=samples)
    m = pvlens.load_model(model, device=device)
    result = sweep(m, vecs, trait, out, judge=load_judge(judge, trait=trait), cfg=cfg)
    for r in result.rows:
        typer.echo(f"layer {r['layer']:>3}  α {r['alpha']:>5g}  trait {r['trait']:6.1f}  coherence {r['coherence']:6.1f}")
    typer.echo(f"choice: layer {result.best_layer}, alpha {result.best_alpha}")
    if (run_dir / "means.safetensors").exists():
        typer.echo(f"report: {write_report(run_dir, out)}")


def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Two or more extraction folders / vector files."),
    layer: int = typer.Option(None, help="Layer for the matrix and PCA (default: middle)."),
    out: Path = typer.Option(Path("runs/compare"), help="Where to write plots and cosines.json."),
) -> None:
    """Cosines between traits' vectors per layer (heatmap) and a PCA of them.

    Example: pvlens compare runs/evil runs/humorous runs/impolite --layer 15
    """
    import json

    from pvlens.io import viz
    from pvlens.vectors import PersonaVectors
    from pvlens.vectors.compare import cosine_matrix, names, pca

    vecs = [PersonaVectors.load(p) for p in runs]
    labels = names(vecs)
    cos = cosine_matrix(vecs)
    layer = vecs[0].n_layers // 2 if layer is None else layer
    out.mkdir(parents=True, exist_ok=True)
    viz.matrix(cos[layer].numpy(), labels, out / f"cosine_layer{layer}.png", f"cosine at layer {layer}")
    coords, explained = pca(vecs, layer)
    ys = coords[:, 1].tolist() if coords.shape[1] > 1 else [0.0] * len(labels)
    viz.scatter(coords[:, 0].tolist(), ys, out / f"pca_layer{layer}.png",
                f"PCA of trait vectors, layer {layer}", f"PC1 ({explained[0]:.0%})",
                f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2", labels)
    (out / "cosines.json").write_text(json.dumps({"traits": labels, "per_layer": cos.tolist()}))
    typer.echo(f"cosines at layer {layer}:")
    for i, a in enumerate(labels):
        typer.echo("  " + a.ljust(14) + " ".join(f"{cos[layer, i, j]:6.2f}" for j in range(len(labels))))
    typer.echo(f"wrote {out}")


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder (rerun resumes)."),
    trait: str = typer.Option("evil", help="Trait to extract."),
    preset: str = typer.Option("cpu", help="Extraction preset."),
) -> None:
    """The main job on the default model: extract a trait, sweep layer × α, write a report."""
    import pvlens
    from pvlens.io.report import write_report
    from pvlens.vectors.extract import ExtractConfig, extract
    from pvlens.vectors.sweep import SweepConfig, sweep

    m = pvlens.load_model()
    vecs = extract(m, trait, out, cfg=ExtractConfig.preset(preset))
    result = sweep(m, vecs, trait, out / "sweep", cfg=SweepConfig(layers=[9, 12, 15, 18, 21]))
    typer.echo(f"choice: layer {result.best_layer}, alpha {result.best_alpha}")
    typer.echo(f"report: {write_report(out, out / 'sweep')}")
