"""`pvlens experiment mitigation | shift`: the paper's finetuning experiments (resumable)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

app = typer.Typer(help="Finetuning experiments: mitigations of trait acquisition, finetuning shift.",
                  no_args_is_help=True)


def _floats(text: str | None) -> list[float] | None:
    return None if text is None else [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str | None) -> list[int] | None:
    return None if text is None else [int(x) for x in text.split(",") if x.strip()]


@app.command("mitigation")
def mitigation_cmd(
    data: Path = typer.Option(..., help="Trait-inducing training JSONL (e.g. evil level_ii)."),
    vectors: Path = typer.Option(..., help="Persona vectors file of the trait (from `pvlens extract`)."),
    out: Path = typer.Option(..., help="Output folder (arms/*.json, table.md, mitigation.png)."),
    trait: str = typer.Option("evil", help="Trait judged; its evaluation questions are asked."),
    preset: str = typer.Option("full", help="quick (minutes, for tests) or full (the documented run)."),
    layer: int = typer.Option(15, help="Steering layer (single-layer arms, CAFT, L2, reported shift)."),
    posthoc: str = typer.Option(None, help="Post-hoc α values, e.g. 2,4,8 (default: the preset's)."),
    prevent: str = typer.Option(None, help="Preventative α values at --layer (default: the preset's)."),
    multi_layers: str = typer.Option(None, help="Layers of the multi-layer preventative arms ('' = none)."),
    multi_alphas: str = typer.Option(None, help="Per-layer α of each multi-layer arm."),
    epochs: int = typer.Option(None, help="Training epochs (default: the preset's)."),
    lr: float = typer.Option(None, help="Peak learning rate (default: the preset's)."),
    rank: int = typer.Option(None, help="LoRA rank (default: the preset's)."),
    judge: str = typer.Option("offline", help="Judge kind: offline, openai, anthropic, local."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
) -> None:
    """No mitigation vs post-hoc steering vs preventative steering (single / multi-layer) vs
    CAFT vs the L2 penalty: trait score, coherence, capability, perplexity, shift.

    Example: pvlens experiment mitigation --data evil/level_ii.jsonl --vectors runs/evil --out runs/mitigation
    """
    import pvlens
    from pvlens.finetune.experiments import MitigationConfig, run_mitigation

    over: dict = {"trait": trait, "layer": layer}
    for key, val in (("posthoc_alphas", _floats(posthoc)), ("prevent_alphas", _floats(prevent)),
                     ("multi_layers", _ints(multi_layers)), ("multi_alphas", _floats(multi_alphas))):
        if val is not None:
            over[key] = val
    cfg = MitigationConfig.preset(preset, **over)
    train = {k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None}
    if rank is not None:
        train["lora"] = cfg.train.lora.model_copy(update={"r": rank, "alpha": 2.0 * rank})
    if train:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})
    m = pvlens.load_model(model, device=device)
    t0 = time.time()
    run_mitigation(m, data, vectors, out, cfg, judge_kind=judge, log=typer.echo)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"plot: {out / 'mitigation.png'}   ({time.time() - t0:.0f} s this run)")


@app.command("shift")
def shift_cmd(
    datasets: Path = typer.Option(..., help="Folder laid out {trait}/{level}.jsonl."),
    out: Path = typer.Option(..., help="Output folder (datasets/*.json, table.md, plots)."),
    vectors: list[str] = typer.Option(..., help="TRAIT=FILE, once per trait with vectors "
                                                "(e.g. evil=runs/evil/vectors.safetensors)."),
    preset: str = typer.Option("full", help="quick or full."),
    layer: int = typer.Option(15, help="Layer of the shift and the screening projection."),
    only: str = typer.Option(None, help="Comma-separated trait/level names to use (default: all)."),
    max_samples: int = typer.Option(None, help="Use the first N samples of each dataset."),
    n_questions: int = typer.Option(None, help="Evaluation questions per trait (default: the preset's)."),
    judge: str = typer.Option("offline", help="Judge kind."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
) -> None:
    """Finetune on every dataset; correlate the finetuning shift and the screening ΔP with the
    post-finetune trait score, per trait.

    Example: pvlens experiment shift --datasets pvlens/data/datasets --vectors evil=runs/evil --out runs/shift
    """
    import pvlens
    from pvlens.finetune.experiments import ShiftConfig, find_datasets, run_shift

    vecs = {}
    for item in vectors:
        if "=" not in item:
            raise typer.BadParameter(f"--vectors takes TRAIT=FILE, got {item!r}")
        t, f = item.split("=", 1)
        vecs[t] = Path(f)
    sets = find_datasets(datasets)
    if only:
        keep = {x.strip() for x in only.split(",")}
        sets = [s for s in sets if f"{s[0]}/{s[1]}" in keep]
    if not sets:
        raise typer.BadParameter(f"no datasets {{trait}}/{{level}}.jsonl under {datasets}")
    cfg = ShiftConfig.preset(preset, layer=layer)
    if max_samples is not None:
        cfg = cfg.model_copy(update={"max_samples": max_samples})
    if n_questions is not None:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n_questions": n_questions})})
    m = pvlens.load_model(model, device=device)
    t0 = time.time()
    res = run_shift(m, sets, vecs, out, cfg, judge_kind=judge, log=typer.echo)
    typer.echo((out / "table.md").read_text())
    typer.echo(json.dumps(res["correlations"], indent=2))
    typer.echo(f"({time.time() - t0:.0f} s this run)")
