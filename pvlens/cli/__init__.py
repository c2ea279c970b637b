"""The `pvlens` command line (typer). Each topic lives in its own module and is added here."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="pvlens: persona vectors on TransformerLens — extract, steer, monitor, screen, finetune.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _register() -> None:
    from pvlens.cli import core, vectors

    app.add_typer(core.model_app, name="model")
    app.command("generate")(core.generate_cmd)
    app.command("extract")(vectors.extract_cmd)
    app.command("sweep")(vectors.sweep_cmd)
    app.command("compare")(vectors.compare_cmd)
    app.command("demo")(vectors.demo_cmd)

    from pvlens.cli import traits

    app.add_typer(traits.app, name="traits")


_register()
