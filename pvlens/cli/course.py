"""`pvlens course`: build the course's notebooks from their sources; check a student's answers."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="The course: build exercise/solution notebooks, check a student's notebook.",
                  no_args_is_help=True)

RootOpt = typer.Option(Path("."), "--root", help="Repository root holding course/chapters.")


@app.command("build")
def build_cmd(
    chapter_list: str = typer.Argument(None, metavar="[CHAPTERS]", help="e.g. 0,3 or 02_steering (default: all)."),
    quick: bool = typer.Option(False, "--quick", help="Reduced sizes (PVLENS_COURSE_QUICK=1); writes to runs/course-quick unless --out."),
    no_run: bool = typer.Option(False, "--no-run", help="Only write the notebooks; do not execute the solutions."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for exercises/ and solutions/ (default: <root>/course)."),
    root: Path = RootOpt,
) -> None:
    """Write course/exercises/NN.ipynb (blanks) and course/solutions/NN.ipynb (executed, outputs
    stored); a full build records each chapter's runtime in course/runtimes.json.

    Examples:
      pvlens course build              (all chapters, full size: what `make course` runs)
      pvlens course build 0,1 --quick
    """
    from pvlens.course.build import build_chapter, chapters

    sources = chapters(root, chapter_list)
    target = out or (root / ("runs/course-quick" if quick else "course"))
    for source in sources:
        typer.echo(f"{source.stem}: building ...")
        seconds = build_chapter(source, target, quick=quick, run=not no_run)
        took = "" if seconds is None else f" (solution ran in {seconds:.0f} s)"
        typer.echo(f"{source.stem}: wrote {target}/exercises and {target}/solutions{took}")


@app.command("check")
def check_cmd(
    chapter: str = typer.Argument(..., help="Chapter number or name, e.g. 2 or 02_steering."),
    notebook: Path = typer.Option(None, "--notebook", help="Your notebook (default: course/exercises/NN_name.ipynb)."),
    quick: bool = typer.Option(False, "--quick", help="Reduced sizes (PVLENS_COURSE_QUICK=1): faster, same checks."),
    root: Path = RootOpt,
) -> None:
    """Run your notebook top to bottom and report which checks pass; exit 1 if any fails.

    Example:
      pvlens course check 1 --notebook course/exercises/01_maths.ipynb
    """
    from pvlens.course.build import chapters, check_notebook

    [source] = chapters(root, chapter)[:1]
    path = notebook or root / "course" / "exercises" / f"{source.stem}.ipynb"
    outcomes = check_notebook(path, quick=quick)
    for o in outcomes:
        mark = "✓" if o.error is None else "✗"
        typer.echo(f"{mark} {', '.join(o.checks)} (cell {o.cell})" + ("" if o.error is None else f": {o.error}"))
    failed = sum(o.error is not None for o in outcomes)
    typer.echo(f"{len(outcomes) - failed}/{len(outcomes)} check cells pass in {path}")
    if failed or not outcomes:
        raise typer.Exit(1)
