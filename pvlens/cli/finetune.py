"""`pvlens finetune run | capability | shift`: LoRA finetuning with preventative steering."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="LoRA finetuning, preventative steering, capability and shift.",
                  no_args_is_help=True)


def _layers(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(f"--layers takes comma-separated block indices, got {text!r}") from None


def _alphas(text: str, n: int) -> list[float]:
    vals = [float(x) for x in text.split(",") if x.strip()]
    if len(vals) == 1:
        return vals * n
    if len(vals) != n:
        raise typer.BadParameter(f"{len(vals)} alphas for {n} layers: give one, or one per layer")
    return vals


@app.command("run")
def run_cmd(
    data: Path = typer.Option(..., help='Training JSONL: {"messages": [...]} a line, assistant last.'),
    out: Path = typer.Option(..., help="Output folder (adapter/, checkpoint/, log.jsonl, summary.json)."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    prevent: Path = typer.Option(None, help="Vectors file: steer along them during training only."),
    alpha: str = typer.Option("4.0", help="Preventative steering strength: one value or one per layer."),
    caft: Path = typer.Option(None, help="Vectors file: ablate the direction during training (CAFT)."),
    l2: Path = typer.Option(None, help="Vectors file: L2 penalty on the projection shift."),
    l2_weight: float = typer.Option(1.0, help="Weight of the L2 projection penalty."),
    layers: str = typer.Option(None, help="Block indices for --prevent / --caft / --l2, e.g. 10,12."),
    lr: float = typer.Option(1e-5, help="Peak learning rate (paper 1e-5)."),
    epochs: int = typer.Option(1, help="Epochs."),
    max_steps: int = typer.Option(None, help="Stop after N optimiser steps."),
    batch_size: int = typer.Option(16, help="Effective batch size (paper 16)."),
    micro_batch_size: int = typer.Option(4, help="Conversations per forward pass."),
    rank: int = typer.Option(32, help="LoRA rank (paper 32)."),
    lora_alpha: float = typer.Option(64.0, help="LoRA alpha (paper 64)."),
    rslora: bool = typer.Option(True, help="rsLoRA scaling alpha/sqrt(r)."),
    eval_fraction: float = typer.Option(0.1, help="Held-out share of the data."),
    save_every: int = typer.Option(25, help="Checkpoint every N steps."),
    seed: int = typer.Option(0, help="Seed."),
    resume: bool = typer.Option(True, help="Resume from OUT/checkpoint if present."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
) -> None:
    """Finetune a LoRA adapter, optionally with preventative steering / CAFT / L2 penalty.

    Example: pvlens finetune run --data evil.jsonl --prevent runs/evil --alpha 4 --layers 15 --out ft/
    """
    import pvlens
    from pvlens.finetune import FinetuneConfig, LoraConfig, ProjectionPenalty, finetune
    from pvlens.finetune.vectors import load_vectors

    chosen = [x for x in (prevent, caft, l2) if x is not None]
    block_ids = _layers(layers)
    if chosen and not block_ids:
        raise typer.BadParameter("--layers is required with --prevent / --caft / --l2")
    m = pvlens.load_model(model, device=device)
    steer = []
    if prevent is not None:
        table = load_vectors(prevent, m.cfg.n_layers)
        steer += pvlens.multi_layer(table, block_ids, _alphas(alpha, len(block_ids)))
    if caft is not None:
        table = load_vectors(caft, m.cfg.n_layers)
        steer += [pvlens.Ablation(table[layer], [layer]) for layer in block_ids]
    penalty = None
    if l2 is not None:
        penalty = ProjectionPenalty(load_vectors(l2, m.cfg.n_layers), block_ids, weight=l2_weight)
    cfg = FinetuneConfig(
        lora=LoraConfig(r=rank, alpha=lora_alpha, rslora=rslora), lr=lr, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, micro_batch_size=micro_batch_size,
        eval_fraction=eval_fraction, save_every=save_every, seed=seed,
    )
    res = finetune(m, data, cfg, out, steer=steer or None, penalty=penalty, resume=resume)
    typer.echo(f"adapter:    {res.adapter_dir}")
    typer.echo(f"steps:      {res.steps}   final train loss {res.train_losses[-1]:.4f}")
    if res.eval_loss is not None:
        typer.echo(f"eval loss:  {res.eval_loss:.4f} (as deployed)"
                   + (f", {res.eval_loss_intervened:.4f} with the training interventions"
                      if res.eval_loss_intervened is not None else ""))
    if steer:
        typer.echo("Interventions were active during training only; the saved adapter runs without them.")


@app.command("capability")
def capability_cmd(
    adapter: Path = typer.Option(None, help="Adapter folder (OUT/adapter of `finetune run`)."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    mmlu: str = typer.Option(None, help="MMLU: 'cais/mmlu' (hub) or a local jsonl/parquet copy."),
    subject: str = typer.Option("all", help="MMLU subject."),
    limit: int = typer.Option(None, help="Score only the first N questions."),
    steer: Path = typer.Option(None, help="Vectors file for post-hoc steering while scoring."),
    layer: int = typer.Option(None, help="Block index for --steer."),
    alpha: float = typer.Option(-4.0, help="Steering strength (negative subtracts: post-hoc mitigation)."),
    normalize: str = typer.Option("sum", help="Option score: sum | char | mean log-likelihood."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Multiple-choice accuracy (built-in set or MMLU) and held-out perplexity.

    Example: pvlens finetune capability --adapter ft/adapter
    """
    import pvlens
    from pvlens.finetune import load_adapter
    from pvlens.finetune.capability import builtin_mc, load_mmlu, mc_accuracy, perplexity
    from pvlens.finetune.vectors import load_vectors

    m = pvlens.load_model(model, device=device)
    if adapter is not None:
        load_adapter(m, adapter)
    steering = None
    if steer is not None:
        if layer is None:
            raise typer.BadParameter("--layer is required with --steer")
        steering = pvlens.Steering(load_vectors(steer, m.cfg.n_layers)[layer], layer, alpha)
    questions = load_mmlu(mmlu, subject, limit=limit) if mmlu else builtin_mc()[:limit]
    res = mc_accuracy(m, questions, normalize=normalize, steer=steering)
    ppl = perplexity(m, steer=steering)
    if as_json:
        typer.echo(json.dumps({"accuracy": res.accuracy, "chance": res.chance, "n": res.n,
                               "perplexity": ppl, "per_subject": res.per_subject}, indent=2))
        return
    typer.echo(f"multiple choice: {res}")
    typer.echo(f"perplexity:      {ppl:.2f} (built-in held-out text)")


@app.command("shift")
def shift_cmd(
    adapter: Path = typer.Option(..., help="Adapter folder (OUT/adapter of `finetune run`)."),
    vectors: Path = typer.Option(..., help="Persona vectors file."),
    prompts: Path = typer.Option(None, help="Text file, one evaluation question a line "
                                            "(default: the vectors' trait's evaluation questions)."),
    trait: str = typer.Option(None, help="Trait whose evaluation questions to use."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
) -> None:
    """Finetuning shift per layer: mean last-prompt activation, finetuned − base, on v̂.

    Example: pvlens finetune shift --adapter ft/adapter --vectors runs/evil --trait evil
    """
    import pvlens
    from pvlens.finetune import finetuning_shift, load_adapter
    from pvlens.finetune.vectors import load_vectors

    m = pvlens.load_model(model, device=device)
    table = load_vectors(vectors, m.cfg.n_layers)
    if prompts is not None:
        questions = [q.strip() for q in prompts.read_text().splitlines() if q.strip()]
    elif trait is not None:
        from pvlens.traits import load_trait

        spec = load_trait(trait)
        questions = list(spec.evaluation_questions)
        if not questions:
            raise typer.BadParameter(f"trait {trait!r} has no evaluation questions; pass --prompts FILE")
    else:
        raise typer.BadParameter("give --prompts FILE or --trait NAME for the evaluation questions")
    handle = load_adapter(m, adapter)
    res = finetuning_shift(m, questions, table, base=handle)
    for layer, p in zip(res.layers, res.projection.tolist(), strict=True):
        typer.echo(f"layer {layer:3d}  shift {p:+.4f}")
