"""`pvlens experiment mitigation | shift`: the paper's finetuning experiments (resumable)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pvlens.cli.confighelp import given
from pvlens.cli.options import (
    DeviceOpt,
    JudgeOpt,
    LayerOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    existing_file,
    float_list,
    int_list,
)

app = typer.Typer(help="Finetuning experiments: mitigations of trait acquisition, finetuning shift.",
                  no_args_is_help=True)

PresetOpt = Annotated[str, typer.Option(help="quick (minutes, for tests) or full (the documented run).")]


def _check_preset(preset: str) -> Literal["quick", "full"]:
    if preset == "quick":
        return "quick"
    if preset == "full":
        return "full"
    raise typer.BadParameter(f"--preset takes quick or full, got {preset!r}")


def _mitigation_config(preset: str, arms: dict[str, Any], train: dict[str, Any], evaluation: dict[str, Any]):
    """The preset with the options given on the command line (None: the preset's value)."""
    from pvlens.finetune.experiments import MitigationConfig

    over = given(**arms)
    cfg = MitigationConfig.preset(_check_preset(preset), **over)
    rank = train.pop("rank")
    tr = given(**train)
    if rank is not None:
        tr["lora"] = cfg.train.lora.changed(r=rank, alpha=2.0 * rank)
    ev = given(**evaluation)
    return cfg.changed(train=cfg.train.changed(**tr), eval=cfg.eval.changed(**ev))


def _arm_options(trait: str, layer: int | None, posthoc: str | None, prevent: str | None, multi_layers: str | None,
                 multi_alphas: str | None, incremental: str | None, caft: bool | None, l2: str | None,
                 seeds: str | None, max_samples: int | None) -> dict[str, Any]:
    """MitigationConfig fields from the arm options (parsed and checked; None: not given)."""
    return dict(trait=trait, layer=layer, posthoc_alphas=float_list(posthoc, "--posthoc"),
                prevent_alphas=float_list(prevent, "--prevent"),
                multi_layers=int_list(multi_layers, "--multi-layers"),
                multi_alphas=float_list(multi_alphas, "--multi-alphas"),
                incremental_alphas=float_list(incremental, "--incremental"), caft=caft,
                l2_weights=float_list(l2, "--l2-weights"), seeds=int_list(seeds, "--seeds"),
                max_samples=max_samples)


AlphasOpt = Annotated[str | None, typer.Option(help="Comma-separated α values ('' = no such arm; default: the preset's).")]
IntOpt = Annotated[int | None, typer.Option(min=0, help="Default: the preset's.")]


@app.command("mitigation")
def mitigation_cmd(
    data: Annotated[Path, typer.Option(help="Trait-inducing training JSONL (e.g. evil level_ii).")],
    vectors: Annotated[Path, typer.Option(help="Persona vectors file of the trait (from `pvlens extract`).")],
    out: OutOpt,
    trait: Annotated[str, typer.Option(help="Trait judged; its evaluation questions are asked.")] = "evil",
    preset: PresetOpt = "full",
    layer: LayerOpt = None,
    posthoc: Annotated[str | None, typer.Option(help="Post-hoc α values, e.g. 2,4,8 (default: the preset's).")] = None,
    prevent: Annotated[str | None, typer.Option(help="Preventative α values at --layer (default: the preset's).")] = None,
    multi_layers: Annotated[str | None, typer.Option(
        help="Layers of the multi-layer preventative arms ('' = none; default: three around the middle).")] = None,
    multi_alphas: Annotated[str | None, typer.Option(help="Per-layer α of each multi-layer arm.")] = None,
    incremental: Annotated[str | None, typer.Option(
        help="α values of the all-layer incremental preventative arms (paper's scheme; top push α·v_L).")] = None,
    caft: Annotated[bool | None, typer.Option("--caft/--no-caft", help="Run the CAFT arm.")] = None,
    l2_weights: AlphasOpt = None,
    seeds: Annotated[str | None, typer.Option(help="Training seeds, e.g. 0,1,2 (default: 0).")] = None,
    max_samples: Annotated[int | None, typer.Option(min=1, help="Train on the first N samples.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the preset's).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps cap (0: none; default: the preset's).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Conversations per step (default: the preset's).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: the preset's).")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default: the preset's).")] = None,
    n_questions: IntOpt = None,
    samples: IntOpt = None,
    mc_limit: IntOpt = None,
    max_new_tokens: IntOpt = None,
    perplexity: Annotated[bool | None, typer.Option("--perplexity/--no-perplexity",
                                                    help="Measure held-out perplexity (default: the preset's).")] = None,
    judge: JudgeOpt = "offline",
    model: ModelOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """No mitigation vs post-hoc steering vs preventative steering (single / listed-layer / all-layer
    incremental) vs CAFT vs the L2 penalty, once per seed: trait score, coherence, capability,
    perplexity, shift, each with a 95 % interval.

    Example: pvlens experiment mitigation --data evil/level_ii.jsonl --vectors runs/evil --out runs/mitigation
    """
    import pvlens
    from pvlens.finetune.experiments import run_mitigation

    existing_file(data, "training data file")
    existing_file(vectors, "vectors file")
    arms = _arm_options(trait, layer, posthoc, prevent, multi_layers, multi_alphas, incremental, caft, l2_weights,
                        seeds, max_samples)
    train = dict(epochs=epochs, lr=lr, rank=rank, batch_size=batch_size, max_steps=max_steps or None)
    evaluation = dict(n_questions=n_questions, samples=samples, mc_limit=mc_limit, max_new_tokens=max_new_tokens,
                      perplexity=perplexity)
    cfg = _mitigation_config(preset, arms, train, evaluation)
    if max_steps == 0:  # 0: no cap (None would mean "the preset's")
        cfg = cfg.changed(train=cfg.train.changed(max_steps=None))
    m = pvlens.load_model(model, device=device)
    t0 = time.time()
    run_mitigation(m, data, vectors, out, cfg, judge_kind=judge, log=typer.echo, overwrite=overwrite)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"plot: {out / 'mitigation.png'}   ({time.time() - t0:.0f} s this run)")


def _trait_vectors(items: list[str]) -> dict[str, Path]:
    """TRAIT=FILE items → {trait: file}, each file checked."""
    vecs = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--vectors takes TRAIT=FILE, got {item!r}")
        t, f = item.split("=", 1)
        vecs[t] = existing_file(Path(f), f"--vectors {t}=")
    return vecs


def _datasets(root: Path, only: str | None) -> list:
    from pvlens.finetune.experiments import find_datasets

    sets = find_datasets(root)
    if only:
        keep = {x.strip() for x in only.split(",")}
        sets = [s for s in sets if f"{s[0]}/{s[1]}" in keep]
    if not sets:
        raise typer.BadParameter(f"no datasets {{trait}}/{{level}}.jsonl under {root}")
    return sets


@app.command("shift")
def shift_cmd(
    datasets: Annotated[Path, typer.Option(help="Folder laid out {trait}/{level}.jsonl.")],
    out: OutOpt,
    vectors: Annotated[list[str], typer.Option(help="TRAIT=FILE, once per trait with vectors "
                                                    "(e.g. evil=runs/evil/vectors.safetensors).")],
    preset: PresetOpt = "full",
    layer: LayerOpt = None,
    only: Annotated[str | None, typer.Option(help="Comma-separated trait/level names to use (default: all).")] = None,
    max_samples: Annotated[int | None, typer.Option(min=1, help="Use the first N samples of each dataset.")] = None,
    n_questions: Annotated[int | None, typer.Option(
        min=1, help="Evaluation questions per trait (default: the preset's).")] = None,
    judge: JudgeOpt = "offline",
    model: ModelOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Finetune on every dataset; correlate the finetuning shift and the screening ΔP with the
    post-finetune trait score, per trait.

    Example: pvlens experiment shift --datasets pvlens/data/datasets --vectors evil=runs/evil --out runs/shift
    """
    import pvlens
    from pvlens.finetune.experiments import ShiftConfig, run_shift

    vecs = _trait_vectors(vectors)
    sets = _datasets(datasets, only)
    cfg = ShiftConfig.preset(_check_preset(preset), **given(layer=layer, max_samples=max_samples))
    if n_questions is not None:
        cfg = cfg.changed(eval=cfg.eval.changed(n_questions=n_questions))
    m = pvlens.load_model(model, device=device)
    t0 = time.time()
    res = run_shift(m, sets, vecs, out, cfg, judge_kind=judge, log=typer.echo, overwrite=overwrite)
    typer.echo((out / "table.md").read_text())
    typer.echo(json.dumps(res["correlations"], indent=2))
    typer.echo(f"({time.time() - t0:.0f} s this run)")
