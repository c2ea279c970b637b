"""Build the course: each chapter source → an exercise notebook (blanks) and an executed solution
notebook (outputs stored), and the measured runtime of each chapter; run a student's notebook and
report its checks.

Notebooks run in a "python3" kernel on this interpreter (nbclient), offline, with the inline
matplotlib backend so figures are stored. `PVLENS_COURSE_QUICK=1` in the kernel's environment
shrinks sample counts (`pvlens.course.QUICK`); the committed notebooks are full-size builds.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pvlens.core.machine import machine_facts
from pvlens.course.source import CHECK_CALL, read_chapter, to_notebook
from pvlens.errors import InputError
from pvlens.io.atomic import write_json_atomic, write_text_atomic

CHAPTERS_DIR = Path("course/chapters")
RUNTIMES = "runtimes.json"
CELL_TIMEOUT = 1800  # seconds; a loaded 2-core machine
RUNTIME_PHRASE = re.compile(r"measured:[^\n]*?on an? [^\n]*?CPU")
"""The header's runtime phrase ("measured: X min on a 2-core CPU") that a full build fills in."""
PROGRESS = re.compile(r"\d+/\d+ \[|it/s\]|s/it\]|IProgress not found")
"""stderr text of progress bars (tqdm), which would clutter the stored notebooks."""


@dataclass(frozen=True)
class CheckOutcome:
    """One cell that calls checks: which, and how its run ended."""

    cell: int
    checks: tuple[str, ...]
    error: str | None  # "AssertionError: ..." / "NotImplementedError: Exercise 1.2"; None = passed


def chapters(root: Path, selection: str | None = None) -> list[Path]:
    """Chapter sources under `root`/course/chapters, all or those named in `selection`
    ("0,3", "00_transformerlens", "2")."""
    found = sorted((root / CHAPTERS_DIR).glob("[0-9][0-9]_*.py"))
    if not found:
        raise InputError(f"no chapter sources in {root / CHAPTERS_DIR} (run from the repository root or pass --root)")
    if not selection:
        return found
    chosen = []
    for item in (x.strip() for x in selection.split(",") if x.strip()):
        hits = [p for p in found if p.stem == item or (item.isdigit() and int(p.stem[:2]) == int(item))]
        if not hits:
            raise InputError(f"no chapter {item!r}; known: {', '.join(p.stem for p in found)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def kernel_env(quick: bool) -> dict[str, str]:
    """The notebook kernel's environment: offline, inline figures, quick mode on or off."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PVLENS_COURSE_QUICK": "1" if quick else "0"}
    env.pop("MPLBACKEND", None)  # Agg would drop the figures a stored notebook should show
    return env


@dataclass(frozen=True)
class Timing:
    """How long a notebook ran: wall clock, and the CPU time of its kernel (the kernel is a child
    process, reaped at shutdown, so RUSAGE_CHILDREN counts it) — on a shared machine the CPU time
    is the comparable number."""

    wall: float
    cpu: float


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(nb: Any, cwd: Path, quick: bool, allow_errors: bool = False) -> Timing:
    """Run `nb` in place (outputs stored); how long it took."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT, allow_errors=allow_errors,
                            resources={"metadata": {"path": str(cwd)}})
    t0, c0 = time.perf_counter(), _children_cpu()
    client.execute(env=kernel_env(quick))
    return Timing(time.perf_counter() - t0, _children_cpu() - c0)


def error_of(cell: Any) -> str | None:
    """"Name: value" of a code cell's error output, or None."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = str(out.get("evalue", "")).strip().splitlines()
            return f"{out.get('ename')}: {value[0] if value else ''}"
    return None


def strip_progress(nb: Any) -> None:
    """Drop progress-bar stderr outputs from an executed notebook (kept: warnings and errors)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (
                o.get("output_type") == "stream" and o.get("name") == "stderr" and PROGRESS.search(o.get("text", "")))]


def check_outcomes(nb: Any) -> list[CheckOutcome]:
    """Every executed cell that calls a `check_*` function, with its error (None = passed)."""
    return [CheckOutcome(i, tuple(CHECK_CALL.findall(c.source)), error_of(c))
            for i, c in enumerate(nb.cells) if c.cell_type == "code" and CHECK_CALL.search(c.source)]


def runtime_text(seconds: float) -> str:
    """The header phrase for a measured runtime."""
    return f"measured: {seconds / 60:.1f} min on a 2-core CPU"


def fill_runtime(text: str, seconds: float) -> str:
    """`text` with its runtime phrase replaced by the measured one."""
    return RUNTIME_PHRASE.sub(runtime_text(seconds), text, count=1)


def record_runtime(out: Path, stem: str, timing: Timing) -> None:
    """Store a full build's runtime in `out`/runtimes.json (what the syllabus table renders),
    with the load average: wall time on a busy machine overstates what a student will wait."""
    path = out / RUNTIMES
    data = json.loads(path.read_text()) if path.exists() else {"chapters": {}}
    data["chapters"][stem] = {"seconds": round(timing.wall, 1), "cpu_seconds": round(timing.cpu, 1),
                              "load_avg": round(os.getloadavg()[0], 1), "date": date.today().isoformat(),
                              **machine_facts(), "threads": os.environ.get("OMP_NUM_THREADS", "unset")}
    data["chapters"] = dict(sorted(data["chapters"].items()))
    write_json_atomic(path, data)


def build_chapter(source: Path, out: Path, quick: bool = False, run: bool = True) -> float | None:
    """Write `out`/exercises/<stem>.ipynb and `out`/solutions/<stem>.ipynb (executed when `run`);
    the solution's runtime in seconds. A full build also records it and fills the header phrase."""
    import nbformat

    ex_cells, sol_cells = read_chapter(source)
    exercise, solution = to_notebook(ex_cells, source.stem), to_notebook(sol_cells, source.stem)
    seconds = None
    if run:
        (out / "solutions").mkdir(parents=True, exist_ok=True)
        timing = execute(solution, out / "solutions", quick)
        seconds = timing.wall
        strip_progress(solution)
        if not quick:
            record_runtime(out, source.stem, timing)
            for nb in (exercise, solution):
                nb.cells[0].source = fill_runtime(nb.cells[0].source, seconds)
            text = source.read_text(encoding="utf-8")
            if RUNTIME_PHRASE.search(text):
                write_text_atomic(source, fill_runtime(text, seconds))
    for kind, nb in (("exercises", exercise), ("solutions", solution)):
        (out / kind).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / kind / f"{source.stem}.ipynb")
    return seconds


def check_notebook(path: Path, quick: bool = False) -> list[CheckOutcome]:
    """Run a student's notebook to the end (errors do not stop it) and report every check cell."""
    import nbformat

    if not path.is_file():
        raise InputError(f"no notebook {path}: pass --notebook PATH (default: course/exercises/NN_name.ipynb)")
    nb = nbformat.read(path, as_version=4)
    execute(nb, path.parent, quick, allow_errors=True)
    return check_outcomes(nb)
