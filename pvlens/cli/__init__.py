"""The `pvlens` command line (typer). Each topic lives in its own module and is added here."""

from __future__ import annotations

import os
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from pvlens.core.allocator import keep_freed_memory_unless_opted_out
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
    """Attach every topic's commands; imports are local so `pvlens --help` stays cheap to build."""
    from pvlens.cli import (
        core,
        course,
        datasets,
        directions,
        experiment,
        finetune,
        guard,
        judge,
        monitor,
        replicate,
        sae,
        screen,
        serve,
        traits,
        validate,
        vectors,
    )

    app.command("generate")(core.generate_cmd)
    app.command("extract")(vectors.extract_cmd)
    app.command("sweep")(vectors.sweep_cmd)
    app.command("compare")(vectors.compare_cmd)
    app.command("demo")(vectors.demo_cmd)
    app.command("serve")(serve.serve_cmd)
    app.command("validate")(validate.validate_cmd)
    app.command("replicate")(replicate.replicate_cmd)
    app.command("off-target")(directions.off_target_cmd)
    vectors.vectors_app.command("directions")(directions.directions_cmd)
    vectors.vectors_app.command("compare-directions")(directions.compare_directions_cmd)
    vectors.vectors_app.command("ablate-weights")(directions.ablate_weights_cmd)
    groups = {
        "model": core.model_app, "vectors": vectors.vectors_app, "traits": traits.app,
        "monitor": monitor.app, "screen": screen.app, "datasets": datasets.app,
        "finetune": finetune.app, "experiment": experiment.app, "judge": judge.app, "sae": sae.app,
        "guard": guard.app, "course": course.app,
    }
    for name, group in groups.items():
        app.add_typer(group, name=name)


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
    keep_freed_memory_unless_opted_out()  # a command's process ends with its job: reuse freed buffers
    if args and args[0] in ("extract", "datasets"):
        from pvlens.cli.ray_gen import ray_address_optional

        args = ray_address_optional(args)  # `--ray` alone: a local cluster
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
