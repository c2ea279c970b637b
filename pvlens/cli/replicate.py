"""`pvlens replicate`: run the registry of experiments behind the docs' measured numbers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from pvlens.cli.options import ModelOpt, OverwriteOpt


def replicate_cmd(
    only: str = typer.Option(None, "--only", help="Comma-separated experiment names (default: all; see --list)."),
    out: Path = typer.Option(None, "--out", "-o", help="Results root (default: results/, or a temporary folder with --quick)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny versions (tiny model, few samples): checks the pipeline, "
                               "never the docs' numbers; written outside results/ unless --out says otherwise."),
    list_only: bool = typer.Option(False, "--list", help="List the experiments with their expected time and exit."),
    report: bool = typer.Option(False, "--report", help="Only rewrite <out>/report.md (the results laid out like "
                                "the paper's sections) from the results already there; runs nothing."),
    model: ModelOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Regenerate the measured numbers the docs show: each experiment writes results/<name>/,
    resumes when its inputs are unchanged and refuses (naming the change) when they differ.

    At the end it writes <out>/report.md: one section per paper section, rendered from the
    results files (a missing entry says "not run yet"). Then `python -m pvlens.io.doctables
    docs/*.md` rewrites the docs' generated tables.

    Examples:
      pvlens replicate --list
      pvlens replicate --only monitoring,models
      pvlens replicate --quick
      pvlens replicate --report
    """
    import os

    from pvlens.core.device import COMPUTE_DTYPE_ENV
    from pvlens.replicate import Context, run_experiment, select

    # fp32 activation passes on every CPU: "auto" picks bf16 on AMX machines, and the docs'
    # numbers must not depend on which machine regenerated them (an explicit setting wins).
    os.environ.setdefault(COMPUTE_DTYPE_ENV, "float32")
    from pvlens.replicate.experiments import REGISTRY
    from pvlens.replicate.report import write_report

    names = [x.strip() for x in only.split(",") if x.strip()] if only else None
    chosen = select(REGISTRY, names)  # unknown names refused before any model is loaded
    if list_only:
        for e in chosen:
            typer.echo(f"{e.name:24s} ~{e.minutes:>4.0f} min  {e.what}")
        return
    if report:
        typer.echo(f"report: {write_report(out or Path('results'))}")
        return
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="pvlens-replicate-quick-")) if quick else Path("results")
    if quick and out.resolve() == Path("results").resolve():
        raise typer.BadParameter("--quick results must not overwrite the committed full results: choose another --out")
    ctx = Context(out, quick=quick, model_name=model, overwrite=overwrite)
    for e in chosen:
        typer.echo(f"{e.name}: running (full run ~{e.minutes:.0f} min)" if not quick else f"{e.name}: quick")
        res = run_experiment(e, ctx)
        typer.echo(f"{e.name}: {res.seconds:.0f} s → {out / e.name}")
    typer.echo(f"report: {write_report(out)}")
    typer.echo("done; regenerate the docs' tables with: python -m pvlens.io.doctables docs/*.md")
