"""A chapter's one source (jupytext "percent" format) → cells → exercise and solution notebooks.

The format (course/COURSE_CONTRACT in the docs): `# %% [markdown]` starts a markdown cell whose
lines are `# `-comments, `# %%` starts a code cell. Inside code cells, everything from
`# BEGIN SOLUTION` to `# END SOLUTION` is the answer: the solution notebook keeps it (without the
marker lines), the exercise notebook replaces it by `raise NotImplementedError("Exercise N.M")` at
the marker's indentation, N.M taken from the last `### Exercise N.M — title` heading above it.
Parsed by hand (a dozen lines) rather than with jupytext: the format needs nothing more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvlens.errors import InputError

CELL_MARK = re.compile(r"^# %%(?P<rest>.*)$")
EXERCISE = re.compile(r"^#{2,4}\s*Exercise\s+(?P<number>\d+\.\d+)\b", re.M)
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
CHECK_CALL = re.compile(r"(?<!def )\b(?P<name>check_\w+)\(")
"""A call of a chapter check, e.g. `ch04.check_last_prompt_projection(fn)` (not its definition)."""


@dataclass(frozen=True)
class Cell:
    """One notebook cell: "markdown" or "code", and its text."""

    kind: str
    text: str


def _markdown_line(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    return "" if line.strip() == "#" else line


def _close(kind: str, lines: list[str], cells: list[Cell]) -> None:
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if kind == "markdown":
        lines = [_markdown_line(line) for line in lines]
    if lines:
        cells.append(Cell(kind, "\n".join(lines)))


def parse(text: str) -> list[Cell]:
    """The cells of a percent-format source; lines before the first `# %%` form a code cell."""
    cells: list[Cell] = []
    kind, lines = "code", []
    for line in text.splitlines():
        mark = CELL_MARK.match(line)
        if mark is None:
            lines.append(line)
            continue
        _close(kind, lines, cells)
        kind, lines = ("markdown" if "[markdown]" in mark["rest"] else "code"), []
    _close(kind, lines, cells)
    return cells


def blank_solutions(code: str, exercise: str | None, where: str) -> str:
    """`code` with every solution block replaced by `raise NotImplementedError("Exercise N.M")`."""
    out: list[str] = []
    inside = False
    for line in code.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside or exercise is None:
                problem = "a nested # BEGIN SOLUTION" if inside else "a solution block before any '### Exercise N.M' heading"
                raise InputError(f"{where}: {problem}; close the block with {END!r} / add the heading")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("Exercise {exercise}")')
        elif stripped == END:
            if not inside:
                raise InputError(f"{where}: {END!r} without a matching {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise InputError(f"{where}: {BEGIN!r} is never closed by {END!r}")
    return "\n".join(out)


def solution_code(code: str) -> str:
    """`code` without the marker lines (the answer stays)."""
    return "\n".join(line for line in code.splitlines() if line.strip() not in (BEGIN, END))


def versions(cells: list[Cell], where: str) -> tuple[list[Cell], list[Cell]]:
    """(exercise cells, solution cells) made from one chapter's cells."""
    exercise: str | None = None
    ex_cells, sol_cells = [], []
    for i, cell in enumerate(cells):
        if cell.kind == "markdown":
            found = EXERCISE.findall(cell.text)
            exercise = found[-1] if found else exercise
            ex_cells.append(cell)
            sol_cells.append(cell)
            continue
        ex_cells.append(Cell("code", blank_solutions(cell.text, exercise, f"{where}, cell {i}")))
        sol_cells.append(Cell("code", solution_code(cell.text)))
    return ex_cells, sol_cells


def exercises_in(cells: list[Cell]) -> list[str]:
    """The exercise numbers that have at least one solution block, in order."""
    found: list[str] = []
    exercise = None
    for cell in cells:
        if cell.kind == "markdown":
            heads = EXERCISE.findall(cell.text)
            exercise = heads[-1] if heads else exercise
        elif BEGIN in cell.text and exercise is not None and exercise not in found:
            found.append(exercise)
    return found


def to_notebook(cells: list[Cell], title: str) -> Any:
    """An nbformat v4 notebook of `cells` (python3 kernel)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["pvlens_course"] = {"chapter": title}
    for i, cell in enumerate(cells):
        new = nbformat.v4.new_markdown_cell if cell.kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(new(cell.text, id=f"cell-{i:03d}"))  # stable ids: rebuilds diff cleanly
    return nb


def read_chapter(path: Path) -> tuple[list[Cell], list[Cell]]:
    """(exercise cells, solution cells) of the chapter source at `path`."""
    if not path.is_file():
        raise InputError(f"no chapter source {path}")
    return versions(parse(path.read_text(encoding="utf-8")), path.name)
