"""The `pvlens` command line (typer). Each topic lives in its own module and is added here."""

from __future__ import annotations

import os
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from pvlens.errors import PvlensError

app = typer.Typer(
    help="pvlens: persona vectors on TransformerLens — extract, steer, monitor, screen, finetune.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _show_version(value: bool) -> None:
    if value:
        from pvlens import __version__

        typer.echo(f"pvlens {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print pvlens's version and exit."
    ),
) -> None:
    """pvlens: persona vectors on TransformerLens — extract, steer, monitor, screen, finetune."""


def _register() -> None:
    from pvlens.cli import core, vectors

    app.add_typer(core.model_app, name="model")
    app.command("generate")(core.generate_cmd)
    app.command("extract")(vectors.extract_cmd)
    app.command("sweep")(vectors.sweep_cmd)
    app.command("compare")(vectors.compare_cmd)
    app.command("demo")(vectors.demo_cmd)
    app.add_typer(vectors.vectors_app, name="vectors")

    from pvlens.cli import traits

    app.add_typer(traits.app, name="traits")

    from pvlens.cli import datasets as datasets_cli
    from pvlens.cli import monitor as monitor_cli
    from pvlens.cli import screen as screen_cli

    app.add_typer(monitor_cli.app, name="monitor")
    app.add_typer(screen_cli.app, name="screen")
    app.add_typer(datasets_cli.app, name="datasets")

    from pvlens.cli import finetune as finetune_cli

    app.add_typer(finetune_cli.app, name="finetune")

    from pvlens.cli import experiment as experiment_cli

    app.add_typer(experiment_cli.app, name="experiment")

    from pvlens.cli import judge

    app.add_typer(judge.app, name="judge")

    from pvlens.cli import sae

    app.add_typer(sae.app, name="sae")

    from pvlens.cli import serve

    app.command("serve")(serve.serve_cmd)

    from pvlens.cli import validate

    app.command("validate")(validate.validate_cmd)

    from pvlens.cli import replicate

    app.command("replicate")(replicate.replicate_cmd)

    from pvlens.cli import directions

    vectors.vectors_app.command("directions")(directions.directions_cmd)
    vectors.vectors_app.command("compare-directions")(directions.compare_directions_cmd)
    vectors.vectors_app.command("ablate-weights")(directions.ablate_weights_cmd)
    app.command("off-target")(directions.off_target_cmd)

    from pvlens.cli import guard

    app.add_typer(guard.app, name="guard")

    from pvlens.cli import course

    app.add_typer(course.app, name="course")


_register()

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    PvlensError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
    ValueError, KeyError, UnicodeDecodeError,
)
"""Errors that mean bad input, not a bug: shown as one line unless --debug."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the typer app behind an error boundary (one line per expected error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("PVLENS_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="pvlens", standalone_mode=False)
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(130) from None
    except NoArgsIsHelpError as e:  # `pvlens screen` alone: show that group's help
        typer.echo(e.ctx.get_help() if e.ctx is not None else str(e), err=True)
        raise SystemExit(2) from None
    except ClickException as e:  # usage errors (bad option values): one line, typer's wording
        if debug:
            raise
        ctx = getattr(e, "ctx", None)
        command = ctx.command_path if ctx is not None else "pvlens"
        typer.echo(f"error: {e.format_message()}  (see `{command} --help`)", err=True)
        raise SystemExit(e.exit_code) from None
    except EXPECTED_ERRORS as e:
        if debug:
            raise
        message = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        typer.echo(f"error: {message}  (run with --debug for the traceback)", err=True)
        raise SystemExit(2) from None
