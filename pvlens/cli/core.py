"""`pvlens model info` and `pvlens generate`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pvlens.cli.options import DeviceOpt, LayerOpt, ModelOpt, SeedOpt, existing_file, finite

if TYPE_CHECKING:  # the CLI imports torch and TransformerLens only when a command runs
    from transformer_lens import HookedTransformer

    from pvlens.core.steering import Intervention

model_app = typer.Typer(help="Inspect models.", no_args_is_help=True)

POSITIONS = ("all", "prompt", "response")


@model_app.command("info")
def model_info(
    name: Annotated[
        str | None,
        typer.Argument(help="Local HF folder or hub name; default: the offline SmolLM2-135M-Instruct."),
    ] = None,
    device: DeviceOpt = None,
    hooks: Annotated[bool, typer.Option("--hooks", help="List every hook point name.")] = False,
) -> None:
    """Layers, d_model, hook names and where the model is cached.

    Example: pvlens model info --hooks
    """
    from pvlens.core.engine import unsupported_reason
    from pvlens.core.model import DEFAULT_MODEL, default_model_dir, load_model

    model = load_model(name, device=device)
    cfg = model.cfg
    typer.echo(f"model:        {name or DEFAULT_MODEL}")
    if name is None:
        typer.echo(f"cached at:    {default_model_dir()}  (env PVLENS_MODEL_DIR / PVLENS_CACHE)")
    typer.echo(f"architecture: {cfg.original_architecture}")
    typer.echo(f"layers:       {cfg.n_layers}  (pvlens layer L = blocks.L.hook_resid_post = paper layer L+1)")
    typer.echo(f"d_model:      {cfg.d_model}   heads: {cfg.n_heads} (kv {cfg.n_key_value_heads})   d_vocab: {cfg.d_vocab}")
    typer.echo(f"dtype:        {cfg.dtype}   device: {cfg.device}")
    reason = unsupported_reason(model)
    typer.echo(f"fast engine:  {'yes' if reason is None else 'no — ' + reason}")
    names = list(model.hook_dict)
    typer.echo(f"hook points:  {len(names)} (e.g. {names[0]}, blocks.0.hook_resid_post)")
    if hooks:
        for n in names:
            typer.echo(f"  {n}")


def generate_cmd(
    question: Annotated[list[str], typer.Argument(help="One or more user messages.")],
    system: Annotated[str | None, typer.Option(help="System prompt (default: the chat template's).")] = None,
    model: ModelOpt = None,
    steer: Annotated[
        Path | None, typer.Option(help="Vectors file (vectors.safetensors or a run folder).")
    ] = None,
    layer: LayerOpt = None,
    incremental: Annotated[
        bool,
        typer.Option(
            "--incremental",
            help="With --steer: the paper's all-layer incremental steering (block l adds "
            "alpha*(v_l - v_(l-1)), a total push of alpha*v at the top); --layer is ignored.",
        ),
    ] = False,
    alpha: Annotated[float, typer.Option(help="Steering strength, in units of the raw vector.")] = 4.0,
    positions: Annotated[str, typer.Option(help="all | prompt | response.")] = "response",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate.")] = 96,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus mass.")] = 1.0,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
) -> None:
    """Chat with the model, optionally steered by a persona vector.

    Example: pvlens generate "How should I treat my rivals?" --steer runs/evil --layer 15 --alpha 4
    """
    import pvlens

    if steer is not None:  # every argument is checked before the model loads
        existing_file(steer, "vectors file")
    finite(alpha, "--alpha")
    if positions not in POSITIONS:
        raise typer.BadParameter(f"--positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
    m = pvlens.load_model(model, device=device)
    steering = None if steer is None else _steering(m, steer, layer, alpha, positions, incremental)
    result = pvlens.generate(
        m, question, system=system, steer=steering, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, seed=seed, progress=False,
    )
    for q, text in zip(question, result.texts, strict=True):
        typer.echo(f"> {q}\n{text}\n")


def _steering(
    model: HookedTransformer,
    path: Path,
    layer: int | None,
    alpha: float,
    positions: str,
    incremental: bool,
) -> list[Intervention]:
    """The interventions `--steer` asks for: one layer (default: the middle block) or, with
    --incremental, every block."""
    import pvlens
    from pvlens.core.config import default_layer
    from pvlens.vectors.coerce import as_persona_vectors

    vecs = as_persona_vectors(path, n_layers=model.cfg.n_layers)
    if incremental:
        return list(pvlens.incremental(vecs.vectors, alpha, positions))
    layer = default_layer(model) if layer is None else layer
    return [pvlens.Steering(vecs[layer], layer, alpha, positions)]
