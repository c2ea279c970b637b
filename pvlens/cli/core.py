"""`pvlens model info` and `pvlens generate`."""

from __future__ import annotations

from pathlib import Path

import typer

model_app = typer.Typer(help="Inspect models.", no_args_is_help=True)


@model_app.command("info")
def model_info(
    name: str = typer.Argument(None, help="Local HF folder or hub name; default: the offline SmolLM2-135M-Instruct."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
    hooks: bool = typer.Option(False, "--hooks", help="List every hook point name."),
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
    question: list[str] = typer.Argument(..., help="One or more user messages."),
    system: str = typer.Option(None, help="System prompt (default: the chat template's)."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    steer: Path = typer.Option(None, help="Vectors file (vectors.safetensors or a run folder)."),
    layer: int = typer.Option(None, help="Block index to steer at (required with --steer)."),
    alpha: float = typer.Option(4.0, help="Steering strength, in units of the raw vector."),
    positions: str = typer.Option("response", help="all | prompt | response."),
    max_new_tokens: int = typer.Option(96, help="Tokens to generate."),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    top_p: float = typer.Option(1.0, help="Nucleus mass."),
    seed: int = typer.Option(0, help="Sampling seed."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto."),
) -> None:
    """Chat with the model, optionally steered by a persona vector.

    Example: pvlens generate "How should I treat my rivals?" --steer runs/evil --layer 15 --alpha 4
    """
    import pvlens
    from pvlens.vectors import PersonaVectors

    m = pvlens.load_model(model, device=device)
    steering = None
    if steer is not None:
        if layer is None:
            raise typer.BadParameter("--layer is required with --steer (see `pvlens sweep` to choose one)")
        vecs = PersonaVectors.load(steer)
        steering = pvlens.Steering(vecs[layer], layer, alpha, positions)
    result = pvlens.generate(
        m, question, system=system, steer=steering, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, seed=seed, progress=False,
    )
    for q, text in zip(question, result.texts, strict=True):
        typer.echo(f"> {q}\n{text}\n")
