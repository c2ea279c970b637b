"""Every course chapter (course/chapters/NN_*.py, found by glob) in quick mode (PVLENS_COURSE_QUICK=1):
its solution runs top to bottom with every check passing, and its exercise notebook's checks all
FAIL with the blanks unfilled — so a check that cannot fail is caught."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from pvlens.course.build import build_chapter, check_outcomes, execute
from pvlens.course.source import exercises_in, parse

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "course" / "chapters").glob("[0-9][0-9]_*.py"))
BLANK_ERRORS = {"NotImplementedError", "AssertionError", "NameError"}
"""How a check cell may end with the blanks unfilled: the student's stub raised, the check
caught a wrong answer, or a top-level answer the check reads is missing."""


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.integration
@pytest.mark.parametrize("source", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_solution_runs_in_quick_mode_and_its_checks_pass(source: Path, tmp_path: Path) -> None:
    import nbformat

    seconds = build_chapter(source, tmp_path, quick=True)
    nb = nbformat.read(tmp_path / "solutions" / f"{source.stem}.ipynb", as_version=4)
    outcomes = check_outcomes(nb)
    assert outcomes or not exercises_in(parse(source.read_text())), f"{source.name}: exercises but no check_* calls"
    for o in outcomes:
        assert o.error is None, f"{source.name} cell {o.cell} ({o.checks}): {o.error}"
        assert "passed" in _stdout(nb.cells[o.cell]), f"{source.name} cell {o.cell}: {o.checks} printed no '✓ ... passed'"
    # No time limit here (timed tests fail on a loaded machine); `make course` records runtimes.
    print(f"{source.stem}: {seconds} s (quick)")


@pytest.mark.integration
@pytest.mark.parametrize("source", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_exercise_checks_fail_with_the_blanks_unfilled(source: Path, tmp_path: Path) -> None:
    import nbformat

    exercises = exercises_in(parse(source.read_text()))
    build_chapter(source, tmp_path, run=False)
    nb = nbformat.read(tmp_path / "exercises" / f"{source.stem}.ipynb", as_version=4)
    if not exercises:  # nothing blanked: the exercise notebook is the solution notebook
        solution = nbformat.read(tmp_path / "solutions" / f"{source.stem}.ipynb", as_version=4)
        assert [c.source for c in nb.cells] == [c.source for c in solution.cells]
        return
    t0 = time.perf_counter()
    execute(nb, tmp_path, quick=True, allow_errors=True)
    outcomes = check_outcomes(nb)
    assert outcomes, f"{source.name}: exercises {exercises} but no cell calls a check_* function"
    for o in outcomes:
        assert o.error is not None, f"{source.name} cell {o.cell}: {o.checks} PASSED with the blanks unfilled"
        assert o.error.split(":")[0] in BLANK_ERRORS, f"{source.name} cell {o.cell} ({o.checks}): {o.error}"
    raised = {m for c in nb.cells if c.cell_type == "code"
              for m in re.findall(r"NotImplementedError: Exercise (\d+\.\d+)", "\n".join(
                  f"{o.get('ename')}: {o.get('evalue')}" for o in c.get("outputs", []) if o.get("output_type") == "error"))}
    missing = [e for e in exercises if e not in raised]
    assert not missing, f"{source.name}: the blanks of exercises {missing} are never reached by a cell (call their checks)"
    print(f"{source.stem}: exercise run {time.perf_counter() - t0:.0f} s")
