"""`pvlens finetune run | capability | shift`: LoRA finetuning with preventative steering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from pvlens.cli.confighelp import field_help, given
from pvlens.cli.options import (
    DeviceOpt,
    LayerOpt,
    ModelOpt,
    OutOpt,
    existing_file,
    finite,
    float_list,
    int_list,
)
from pvlens.finetune.lora import LoraConfig
from pvlens.finetune.train import FinetuneConfig
from pvlens.io.conversations import read_conversations
from pvlens.vectors.coerce import as_persona_vectors

if TYPE_CHECKING:
    from torch import Tensor

    from pvlens.core.steering import Intervention

app = typer.Typer(help="LoRA finetuning, preventative steering, capability and shift.",
                  no_args_is_help=True)


def _opt(config: type, name: str, flag: str | None = None) -> typer.models.OptionInfo:
    """An option (default None: the config's default) whose help is the field's docstring."""
    return typer.Option(*((flag,) if flag else ()), help=field_help(config, name))


VectorsFile = Annotated[Path | None, typer.Option(help="Vectors file or run folder (from `pvlens extract`).")]


def _alphas(text: str, n: int) -> list[float]:
    vals = float_list(text, "--alpha") or []
    if len(vals) == 1:
        return vals * n
    if len(vals) != n:
        raise typer.BadParameter(f"{len(vals)} alphas for {n} layers: give one, or one per layer")
    return vals


def _training_config(**options: object) -> FinetuneConfig:
    """FinetuneConfig from the options given (the others keep the config's defaults)."""
    lora = given(r=options.pop("rank"), alpha=options.pop("lora_alpha"), rslora=options.pop("rslora"))
    return FinetuneConfig(lora=LoraConfig(**lora), **given(**options))


def _prevent(vectors: Tensor, blocks: list[int], alpha: str, incremental: bool) -> list[Intervention]:
    """Preventative steering: the full v at each listed block, or (incremental) the paper's
    α·(v_ℓ − v_{ℓ−1}) at every block (or at the listed contiguous range), on every token."""
    import pvlens

    if incremental:
        return list(pvlens.incremental(vectors, _alphas(alpha, 1)[0], positions="all", layers=blocks or None))
    return list(pvlens.multi_layer(vectors, blocks, _alphas(alpha, len(blocks))))


def _interventions(m, prevent: Path | None, caft: Path | None, l2: Path | None, blocks: list[int],
                   alpha: str, l2_weight: float, incremental: bool = False):
    """(steer, penalty) for the training run."""
    import pvlens
    from pvlens.finetune import ProjectionPenalty
    from pvlens.finetune.vectors import load_vectors

    steer: list[Intervention] = []
    if prevent is not None:
        steer += _prevent(load_vectors(prevent, m.cfg.n_layers), blocks, alpha, incremental)
    if caft is not None:
        table = load_vectors(caft, m.cfg.n_layers)
        steer += [pvlens.Ablation(table[layer], [layer]) for layer in blocks]
    penalty = ProjectionPenalty(load_vectors(l2, m.cfg.n_layers), blocks, weight=l2_weight) if l2 else None
    return steer or None, penalty


def _check_layers(blocks: list[int], prevent: Path | None, caft: Path | None, l2: Path | None,
                  incremental: bool) -> None:
    """--layers is needed by every intervention except all-layer incremental steering."""
    if incremental and prevent is None:
        raise typer.BadParameter("--incremental needs --prevent VECTORS")
    if incremental and blocks and blocks != list(range(blocks[0], blocks[0] + len(blocks))):
        raise typer.BadParameter(f"--incremental needs a contiguous ascending --layers range, got {blocks}")
    if ((prevent and not incremental) or caft or l2) and not blocks:
        raise typer.BadParameter("--layers is required with --prevent (without --incremental) / --caft / --l2")


@app.command("run")
def run_cmd(
    data: Annotated[Path, typer.Option(help='Training JSONL: {"messages": [...]} a line, assistant last.')],
    out: OutOpt,
    model: ModelOpt = None,
    prevent: VectorsFile = None,
    alpha: Annotated[str, typer.Option(help="Preventative steering strength: one value or one per layer.")] = "4.0",
    caft: VectorsFile = None,
    l2: VectorsFile = None,
    l2_weight: Annotated[float, typer.Option(help="Weight of the L2 projection penalty.")] = 1.0,
    layers: Annotated[str | None, typer.Option(help="Block indices for --prevent / --caft / --l2, e.g. 10,12.")] = None,
    incremental: Annotated[bool, typer.Option(
        "--incremental", help="--prevent with the paper's all-layer incremental steering: α·(v_ℓ − v_{ℓ−1}) at "
        "every block (top push α·v_L; --layers optional, a contiguous range); one --alpha.")] = False,
    lr: Annotated[float | None, _opt(FinetuneConfig, "lr")] = None,
    epochs: Annotated[int | None, _opt(FinetuneConfig, "epochs")] = None,
    max_steps: Annotated[int | None, _opt(FinetuneConfig, "max_steps")] = None,
    batch_size: Annotated[int | None, _opt(FinetuneConfig, "batch_size")] = None,
    micro_batch_size: Annotated[int | None, _opt(FinetuneConfig, "micro_batch_size")] = None,
    rank: Annotated[int | None, _opt(LoraConfig, "r", "--rank")] = None,
    lora_alpha: Annotated[float | None, _opt(LoraConfig, "alpha", "--lora-alpha")] = None,
    rslora: Annotated[bool | None, _opt(LoraConfig, "rslora", "--rslora/--no-rslora")] = None,
    eval_fraction: Annotated[float | None, _opt(FinetuneConfig, "eval_fraction")] = None,
    save_every: Annotated[int | None, _opt(FinetuneConfig, "save_every")] = None,
    seed: Annotated[int | None, _opt(FinetuneConfig, "seed")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from OUT/checkpoint if present.")] = True,
    device: DeviceOpt = None,
) -> None:
    """Finetune a LoRA adapter, optionally with preventative steering / CAFT / L2 penalty.

    Example: pvlens finetune run --data evil.jsonl --prevent runs/evil --alpha 4 --layers 15 --out ft/
    """
    import pvlens
    from pvlens.finetune import finetune

    read_conversations(data)  # every line checked now: a bad row costs no model load
    for flag, path in (("--prevent", prevent), ("--caft", caft), ("--l2", l2)):
        if path is not None:
            existing_file(path, f"{flag} vectors")
    blocks = int_list(layers, "--layers") or []
    _check_layers(blocks, prevent, caft, l2, incremental)
    _alphas(alpha, 1 if incremental else max(1, len(blocks)))
    finite(l2_weight, "--l2-weight")
    for path in (prevent, caft, l2):
        if path is not None:
            as_persona_vectors(path)  # unreadable vectors: one line, before the model loads
    cfg = _training_config(lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                           micro_batch_size=micro_batch_size, rank=rank, lora_alpha=lora_alpha,
                           rslora=rslora, eval_fraction=eval_fraction, save_every=save_every, seed=seed)
    m = pvlens.load_model(model, device=device)
    steer, penalty = _interventions(m, prevent, caft, l2, blocks, alpha, l2_weight, incremental)
    res = finetune(m, data, cfg, out, steer=steer, penalty=penalty, resume=resume)
    typer.echo(f"adapter:    {res.adapter_dir}")
    typer.echo(f"steps:      {res.steps}   final train loss {res.train_losses[-1]:.4f}")
    if res.eval_loss is not None:
        typer.echo(f"eval loss:  {res.eval_loss:.4f} (as deployed)"
                   + (f", {res.eval_loss_intervened:.4f} with the training interventions"
                      if res.eval_loss_intervened is not None else ""))
    if steer or penalty:
        typer.echo("Interventions were active during training only; the saved adapter runs without them.")


AdapterOpt = Annotated[Path | None, typer.Option(help="Adapter folder (OUT/adapter of `finetune run`).")]


@app.command("capability")
def capability_cmd(
    adapter: AdapterOpt = None,
    model: ModelOpt = None,
    mmlu: Annotated[str | None, typer.Option(help="MMLU: 'cais/mmlu' (hub) or a local jsonl/parquet copy.")] = None,
    subject: Annotated[str, typer.Option(help="MMLU subject.")] = "all",
    limit: Annotated[int | None, typer.Option(min=0, help="Score only the first N questions.")] = None,
    steer: VectorsFile = None,
    layer: LayerOpt = None,
    alpha: Annotated[float, typer.Option(help="Steering strength (negative subtracts: post-hoc mitigation).")] = -4.0,
    normalize: Annotated[str, typer.Option(help="Option score: sum | char | mean log-likelihood.")] = "sum",
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Multiple-choice accuracy (built-in set or MMLU) and held-out perplexity.

    Example: pvlens finetune capability --adapter ft/adapter
    """
    import pvlens
    from pvlens.core.config import default_layer
    from pvlens.finetune import load_adapter
    from pvlens.finetune.capability import builtin_mc, load_mmlu, mc_accuracy, perplexity
    from pvlens.vectors.coerce import direction

    if adapter is not None:
        existing_file(adapter, "adapter folder")
    if steer is not None:
        existing_file(steer, "--steer vectors")
    finite(alpha, "--alpha")
    m = pvlens.load_model(model, device=device)
    if adapter is not None:
        load_adapter(m, adapter)
    steering = None
    if steer is not None:
        layer = default_layer(m) if layer is None else layer
        steering = pvlens.Steering(direction(steer, layer), layer, alpha)
    questions = load_mmlu(mmlu, subject, limit=limit) if mmlu else builtin_mc()[:limit]
    res = mc_accuracy(m, questions, normalize=cast(Any, normalize), steer=steering)
    ppl = perplexity(m, steer=steering)
    if as_json:
        typer.echo(json.dumps({"accuracy": res.accuracy, "chance": res.chance, "n": res.n,
                               "perplexity": ppl, "per_subject": res.per_subject}, indent=2))
        return
    typer.echo(f"multiple choice: {res}")
    typer.echo(f"perplexity:      {ppl:.2f} (built-in held-out text)")


def _shift_questions(prompts: Path | None, trait: str | None) -> list[str]:
    """Evaluation questions from a text file, or the trait's."""
    if prompts is not None:
        existing_file(prompts, "--prompts file")
        return [q.strip() for q in prompts.read_text().splitlines() if q.strip()]
    if trait is None:
        raise typer.BadParameter("give --prompts FILE or --trait NAME for the evaluation questions")
    from pvlens.traits import load_trait

    questions = list(load_trait(trait).evaluation_questions)
    if not questions:
        raise typer.BadParameter(f"trait {trait!r} has no evaluation questions; pass --prompts FILE")
    return questions


@app.command("shift")
def shift_cmd(
    adapter: Annotated[Path, typer.Option(help="Adapter folder (OUT/adapter of `finetune run`).")],
    vectors: Annotated[Path, typer.Option(help="Persona vectors file or run folder.")],
    prompts: Annotated[Path | None, typer.Option(help="Text file, one evaluation question a line "
                                                      "(default: the trait's evaluation questions).")] = None,
    trait: Annotated[str | None, typer.Option(help="Trait whose evaluation questions to use.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Finetuning shift per layer: mean last-prompt activation, finetuned − base, on v̂.

    Example: pvlens finetune shift --adapter ft/adapter --vectors runs/evil --trait evil
    """
    import pvlens
    from pvlens.finetune import finetuning_shift, load_adapter

    existing_file(adapter, "adapter folder")
    existing_file(vectors, "vectors file")
    questions = _shift_questions(prompts, trait)
    m = pvlens.load_model(model, device=device)
    handle = load_adapter(m, adapter)
    res = finetuning_shift(m, questions, vectors, base=handle)
    for layer, p in zip(res.layers, res.projection.tolist(), strict=True):
        typer.echo(f"layer {layer:3d}  shift {p:+.4f}")
