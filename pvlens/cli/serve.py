"""`pvlens serve`: the steering playground, a local web page (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pvlens.cli.options import DeviceOpt, ModelOpt, existing_file, finite

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

VectorsOpt = Annotated[
    list[str] | None,
    typer.Option("--vectors", "-v", help="Extra vectors as NAME=PATH (a vectors file or run folder); repeatable."),
]


def named_paths(specs: list[str]) -> dict[str, Path]:
    """['evil2=runs/evil'] → {'evil2': Path('runs/evil')}; each path must exist."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise typer.BadParameter(f"--vectors takes NAME=PATH, got {spec!r}")
        if name.strip() in out:
            raise typer.BadParameter(f"--vectors names {name.strip()!r} twice")
        out[name.strip()] = existing_file(Path(path.strip()), "vectors")
    return out


def serve_cmd(
    model: ModelOpt = None,
    device: DeviceOpt = None,
    vectors: VectorsOpt = None,
    builtin: bool = typer.Option(True, "--builtin/--no-builtin", help="Offer the shipped vectors (evil, sycophantic, hallucinating) — default model only."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    max_push: float = typer.Option(1.0, "--max-push", help="α limit: |α|·‖v_L‖ ≤ max-push × the layer's residual norm."),
    max_prompt_tokens: int = typer.Option(256, "--max-prompt-tokens", min=1, help="Longest prompt accepted (tokens)."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Longest reply a request may ask for."),
) -> None:
    """Steering playground: unsteered and steered replies side by side, coloured by projection.

    Example: pvlens serve --port 8000   (then open http://127.0.0.1:8000)
    """
    extra = named_paths(vectors or [])
    finite(max_push, "--max-push")
    if max_push <= 0:
        raise typer.BadParameter("--max-push must be positive")
    if not extra and (model is not None or not builtin):
        raise typer.BadParameter("no vectors to steer with: give --vectors NAME=PATH (the shipped ones fit the default model only)")
    if host not in LOCAL_HOSTS:
        typer.echo(f"warning: binding {host}: anyone who can reach it can run the model", err=True)

    import uvicorn

    import pvlens
    from pvlens.core.model import DEFAULT_MODEL
    from pvlens.serve import ServeSettings, Session, create_app

    m = pvlens.load_model(model, device=device)
    named = {t: pvlens.PersonaVectors.builtin(t) for t in shipped_traits()} if model is None and builtin else {}
    named.update({k: pvlens.PersonaVectors.load(p) for k, p in extra.items()})
    settings = ServeSettings(max_push=max_push, max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens)
    session = Session(m, named, settings, model_name=model or DEFAULT_MODEL)
    typer.echo(f"pvlens playground on http://{host}:{port}  (Ctrl+C stops)")
    uvicorn.run(create_app(session), host=host, port=port, log_level="warning")


def shipped_traits() -> list[str]:
    """The built-in traits with vectors shipped for the default model (evil, sycophantic, hallucinating)."""
    from importlib import resources

    from pvlens.traits import builtin_traits
    from pvlens.vectors import DEFAULT_MODEL_KEY

    folder = Path(str(resources.files("pvlens"))) / "data" / "vectors" / DEFAULT_MODEL_KEY
    return [t for t in builtin_traits() if (folder / f"{t}.safetensors").exists()]
