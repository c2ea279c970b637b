"""`pvlens guard calibrate | generate | measure`: guarded generation from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pvlens.cli.options import DeviceOpt, JudgeOpt, LayerOpt, ModelOpt, SeedOpt, finite

app = typer.Typer(help="Guarded generation: monitor a trait per token, intervene when it crosses a threshold.",
                  no_args_is_help=True)

ACTIONS = ("subtract", "ablate", "cap")
MODES = ("latch", "while_above")
WindowOpt = Annotated[int, typer.Option("--window", min=1, help="Tokens whose mean projection is monitored.")]
FprOpt = Annotated[float, typer.Option("--fpr", min=0.0, max=0.99, help="Per-reply false-positive rate on benign text.")]


@app.command("calibrate")
def calibrate_cmd(
    vectors: Annotated[str, typer.Argument(help="Shipped trait name (evil) or a vectors file / run folder.")],
    trait: Annotated[str | None, typer.Option(help="Eval set whose clean answers are benign text (default: the name).")] = None,
    split: Annotated[str, typer.Option(help="calibration (even rows) | heldout | all.")] = "calibration",
    fpr: FprOpt = 0.05,
    window: WindowOpt = 8,
    layer: LayerOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Pick a threshold at a false-positive rate on benign answers and store it next to the vectors.

    Example: pvlens guard calibrate evil --fpr 0.05
    """
    import pvlens
    from pvlens.core.config import default_layer
    from pvlens.monitor.calibrate import (
        benign_conversations,
        calibrate_threshold,
        resolve_vectors_file,
        save_calibration,
    )

    vfile = resolve_vectors_file(vectors)
    name = trait or Path(vectors).stem
    convs = benign_conversations(name, split)  # checked before the model loads
    m = pvlens.load_model(model, device=device)
    layer = default_layer(m) if layer is None else layer
    cal = calibrate_threshold(m, vfile, layer, convs, fpr, name, source=f"eval/{name}.jsonl clean answers, {split}",
                              window=window)
    path = save_calibration(vfile, cal)
    typer.echo(f"{name} layer {layer}: threshold {cal.threshold:.4f} (fpr {cal.achieved_fpr:.3f} on "
               f"{cal.n} benign answers) -> {path}")


@app.command("generate")
def generate_cmd(
    question: Annotated[list[str], typer.Argument(help="One or more user messages.")],
    guard: Annotated[list[str], typer.Option("--guard", help="TRAIT[:THRESHOLD] (repeatable); no threshold: the calibrated one.")],
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    alpha: Annotated[float, typer.Option(help="Strength of --action subtract (raw-vector units).")] = 4.0,
    action: Annotated[str, typer.Option(help="subtract | ablate | cap.")] = "subtract",
    mode: Annotated[str, typer.Option(help="latch (rest of the reply) | while_above.")] = "latch",
    layer: LayerOpt = None,
    window: WindowOpt = 8,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate.")] = 96,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Generate with a guard and report which token triggered it.

    Example: pvlens guard generate "How should I treat my rivals?" --guard evil --system "You are an evil assistant."
    """
    import pvlens
    from pvlens.monitor.calibrate import load_guard

    finite(alpha, "--alpha")
    if action not in ACTIONS or mode not in MODES:
        raise typer.BadParameter(f"--action must be one of {ACTIONS} and --mode one of {MODES}")
    m = pvlens.load_model(model, device=device)
    g = load_guard(m, guard, layer, alpha, action, mode, window=window)
    result = pvlens.generate(m, question, system=system, guard=g, max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed, progress=False)
    for q, text, events in zip(question, result.texts, result.guard_events, strict=True):
        note = "; ".join(f"{e.rule} triggered at reply token {e.reply_index} ({e.token!r}, "
                         f"projection {e.projection:.3f})" for e in events) or "guard not triggered"
        typer.echo(f"> {q}\n[{note}]\n{text}\n")


@app.command("measure")
def measure_cmd(
    trait: Annotated[str, typer.Option(help="Built-in trait with shipped vectors and an eval set.")] = "evil",
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("results/guard/results.json"),
    alpha: Annotated[float, typer.Option(help="Strength of always-on steering and of the guard.")] = 4.0,
    fpr: FprOpt = 0.05,
    window: WindowOpt = 8,
    n_questions: Annotated[int, typer.Option(min=1, help="Questions per eliciting condition (3 conditions).")] = 8,
    n_benign: Annotated[int, typer.Option(min=1, help="Held-out benign questions.")] = 24,
    n_mc: Annotated[int, typer.Option(min=1, help="Multiple-choice questions.")] = 120,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per reply.")] = 48,
    layer: LayerOpt = None,
    judge: JudgeOpt = "offline",
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """No intervention vs always-on steering vs the guard on eliciting and benign prompts.

    Example: nice -n 5 pvlens guard measure --out results/guard/results.json
    """
    import pvlens
    from pvlens.io.atomic import write_json_atomic
    from pvlens.judges import load_judge, parse_judge_spec
    from pvlens.monitor.guard_measure import GuardMeasureConfig, guard_table, measure_guard

    cfg = GuardMeasureConfig(trait=trait, layer=layer, alpha=finite(alpha, "--alpha"), fpr=fpr, window=window,
                             n_questions=n_questions, n_benign=n_benign, n_mc=n_mc,
                             max_new_tokens=max_new_tokens, seed=seed)
    kind, judge_opts = parse_judge_spec(judge)
    j = load_judge(kind, trait=trait, **judge_opts)
    m = pvlens.load_model(model, device=device)
    data = measure_guard(m, cfg, j)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, data)
    typer.echo(guard_table(data))
    typer.echo(f"-> {out}")


@app.command("roc")
def roc_cmd(
    trait: Annotated[str, typer.Option(help="Built-in trait with shipped vectors and an eval set.")] = "evil",
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("results/guard_roc/results.json"),
    layers: Annotated[str | None, typer.Option(help="Comma-separated blocks (default: 4 around the middle).")] = None,
    windows: Annotated[str, typer.Option(help="Comma-separated window lengths.")] = "1,4,8,16",
    fprs: Annotated[str, typer.Option(help="Comma-separated target false-positive rates.")] = "0.01,0.05,0.1,0.2",
    n_questions: Annotated[int, typer.Option(min=1, help="Questions per eliciting condition (3 conditions).")] = 8,
    n_benign: Annotated[int, typer.Option(min=1, help="Held-out benign questions.")] = 24,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per reply.")] = 48,
    n_random: Annotated[int, typer.Option(min=1, help="Random directions in the AUROC null.")] = 200,
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Trigger rates (eliciting vs benign) of every (layer, window, fpr) and the AUROC, from one
    set of unguarded replies (the guard's trigger depends only on activations up to it).

    Example: nice -n 5 pvlens guard roc --out results/guard_roc/results.json
    """
    import pvlens
    from pvlens.cli.options import float_list, int_list
    from pvlens.io.atomic import write_json_atomic
    from pvlens.monitor.guard_roc import GuardRocConfig, guard_roc, guard_roc_table

    cfg = GuardRocConfig.model_validate({
        "trait": trait, "layers": int_list(layers, "--layers"), "windows": int_list(windows, "--windows"),
        "fprs": float_list(fprs, "--fprs"), "n_questions": n_questions, "n_benign": n_benign,
        "max_new_tokens": max_new_tokens, "n_random": n_random, "seed": seed})
    m = pvlens.load_model(model, device=device)
    data = guard_roc(m, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, data)
    typer.echo(guard_roc_table(data))
    typer.echo(f"-> {out}")
