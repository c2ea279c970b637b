"""Every course chapter (course/chapters/NN_*.py, found by glob) in quick mode (PVLENS_COURSE_QUICK=1):
its solution runs top to bottom with every check passing, and its exercise notebook's checks all
FAIL with the blanks unfilled — so a check that cannot fail is caught.

The blank exercise notebook runs only its check cells and the cells they need (`check_slice`):
a cell is kept when it blanks a solution, calls a check, or binds a name a kept cell reads before
its last check call. Each check cell so sees what it would see in the whole notebook, without the
chapter's long generations that no check reads (the solution test runs those). It runs in the
kernel of the chapter's solution test after `%reset -f` (`ChapterKernel`): the imports are paid
once per chapter; the solution always gets a fresh kernel."""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pvlens.course.build import CELL_TIMEOUT, build_chapter, check_outcomes, kernel_env
from pvlens.course.source import CHECK_CALL, exercises_in, parse

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "course" / "chapters").glob("[0-9][0-9]_*.py"))
BLANK_ERRORS = {"NotImplementedError", "AssertionError", "NameError"}
"""How a check cell may end with the blanks unfilled: the student's stub raised, the check
caught a wrong answer, or a top-level answer the check reads is missing."""
BLANK = 'raise NotImplementedError("Exercise'
UNTRACKED = (ast.Global, ast.Nonlocal)
"""Statements that bind names out of sight of a cell's own assignments: any one keeps every cell."""


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _target_name(node: ast.AST) -> str | None:
    """The variable an assignment target binds or mutates (`x`, `x[i]`, `x.a` → "x")."""
    while isinstance(node, (ast.Subscript, ast.Attribute, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def binds_and_reads(statements: list[ast.stmt], modules: set[str]) -> tuple[set[str], set[str]]:
    """(names the statements bind or mutate, names they read), function bodies included: an
    over-approximation of both, so a slice keeps every cell that might matter. A method call
    `x.f(...)` may mutate x unless x is imported (`torch.f(...)`, `ch05.check_f(...)`)."""
    binds: set[str] = set()
    reads: set[str] = set()
    for node in (n for s in statements for n in ast.walk(s)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            root = _target_name(node.func)
            binds |= {root} if root and root not in modules else set()
        elif isinstance(node, ast.Name):
            (reads if isinstance(node.ctx, ast.Load) else binds).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            binds.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            binds |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            binds.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            binds |= {n for t in targets if (n := _target_name(t))}
    return binds, reads


def _check_prefix(body: list[ast.stmt], code: str) -> list[ast.stmt]:
    """The statements of a check cell up to its last check call: what decides the checks. (If a
    check passed, the cell goes on, but then its "✓ passed" line already fails the test.)"""
    last = max(i for i, s in enumerate(body) if CHECK_CALL.search(ast.get_source_segment(code, s) or ""))
    return body[: last + 1]


def check_slice(sources: list[str]) -> list[int]:
    """Indices of the code cells (in `sources`, in order) that the check cells need: every cell
    with a blank or a check call, and, backwards, every cell binding a name a kept cell reads."""
    trees = [ast.parse(s) for s in sources]
    if any(isinstance(n, UNTRACKED) for t in trees for n in ast.walk(t)):
        return list(range(len(sources)))
    modules = binds_and_reads([s for t in trees for s in t.body if isinstance(s, (ast.Import, ast.ImportFrom))],
                              set())[0]
    needed: set[str] = set()
    keep: list[int] = []
    for i in reversed(range(len(sources))):
        code, body = sources[i], trees[i].body
        is_check = CHECK_CALL.search(code) is not None
        binds, reads = binds_and_reads(_check_prefix(body, code) if is_check else body, modules)
        if is_check or BLANK in code or binds & needed:
            keep.append(i)
            needed |= reads
    return keep[::-1]


def test_check_slice_keeps_what_the_checks_read() -> None:
    cells = ["import torch\nmodel = load()",  # 0: read by 3 (torch, via its check prefix)
             "slow = generate(model)",  # 1: read only after the check call of 5
             "def f(x):\n    raise NotImplementedError(\"Exercise 1.1\")",  # 2: a blank
             "n = torch.ones(2)\nd = {}\nd['k'] = n",  # 3: binds d (mutated), read by 4
             "ch.check_a(f, d)\nprint(slow)",  # 4: a check; `slow` comes after its call
             "import ch_module as ch",  # 5: binds ch after 4 — not what 4 reads
             "plot(slow)"]  # 6: neither blank nor check nor read
    assert check_slice(cells) == [0, 2, 3, 4]  # `ch` is unbound at 4 in the whole notebook too
    assert check_slice([*cells, "def g():\n    global slow\n    slow = 1"]) == list(range(8))
    # a method call may mutate its object (kept), unless the object is an imported module
    assert check_slice(["import plt\nrows = []", "rows.append(1)", "plt.show()", "ch.check_n(rows)"]) == [0, 1, 3]


class ChapterKernel:
    """One python3 kernel (quick mode, offline) for a chapter's two tests: `run(nb, fresh=True)`
    restarts it unless unused; otherwise `run` resets the user namespace (`%reset -f`) and drops
    the checks' cached tiny model, so cells and checks start from nothing of the earlier run."""

    RESET = ("import os\nos.chdir({cwd!r})\nfrom pvlens.course.checks import common\n"
             "common.tiny.cache_clear()\n%reset -f")

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.client: Any = None

    def run(self, nb: Any, fresh: bool, allow_errors: bool = False) -> float:
        """Execute `nb`'s cells here (cwd: `self.cwd`); the wall time in seconds."""
        import nbformat
        from nbclient import NotebookClient

        if self.client is not None and fresh:
            self.close()
        t0 = time.perf_counter()
        if self.client is None:
            self.cwd.mkdir(parents=True, exist_ok=True)
            self.client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                                         resources={"metadata": {"path": str(self.cwd)}})
        else:
            reset = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(self.RESET.format(cwd=str(self.cwd)))])
            self.client.nb, self.client.allow_errors = reset, False
            self.client.execute(cleanup_kc=False)
        self.client.nb, self.client.allow_errors = nb, allow_errors
        self.client.execute(env=kernel_env(quick=True), cleanup_kc=False)
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.client is not None and self.client.km is not None:
            from nbclient.util import run_sync

            run_sync(self.client.km.shutdown_kernel)(now=True)
            self.client.kc.stop_channels()
        self.client = None


@pytest.fixture(scope="module", params=CHAPTERS, ids=[p.stem for p in CHAPTERS])
def chapter(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(chapter source, its build folder, its kernel): module-scoped, so pytest runs a chapter's
    solution test and then its exercise test before the next chapter."""
    source: Path = request.param
    out = tmp_path_factory.mktemp(source.stem)
    build_chapter(source, out, run=False)
    kernel = ChapterKernel(out)
    yield source, out, kernel
    kernel.close()


@pytest.mark.integration
def test_solution_runs_in_quick_mode_and_its_checks_pass(chapter) -> None:
    import nbformat

    source, out, kernel = chapter
    nb = nbformat.read(out / "solutions" / f"{source.stem}.ipynb", as_version=4)
    seconds = kernel.run(nb, fresh=True)
    outcomes = check_outcomes(nb)
    assert outcomes or not exercises_in(parse(source.read_text())), f"{source.name}: exercises but no check_* calls"
    for o in outcomes:
        assert o.error is None, f"{source.name} cell {o.cell} ({o.checks}): {o.error}"
        assert "passed" in _stdout(nb.cells[o.cell]), f"{source.name} cell {o.cell}: {o.checks} printed no '✓ ... passed'"
    # No time limit here (timed tests fail on a loaded machine); `make course` records runtimes.
    print(f"{source.stem}: {seconds:.0f} s (quick)")


@pytest.mark.integration
def test_exercise_checks_fail_with_the_blanks_unfilled(chapter) -> None:
    import nbformat

    source, out, kernel = chapter
    exercises = exercises_in(parse(source.read_text()))
    nb = nbformat.read(out / "exercises" / f"{source.stem}.ipynb", as_version=4)
    if not exercises:  # nothing blanked: the exercise notebook is the solution notebook
        solution = nbformat.read(out / "solutions" / f"{source.stem}.ipynb", as_version=4)
        assert [c.source for c in nb.cells] == [c.source for c in solution.cells]
        return
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    kept = [code[k] for k in check_slice([nb.cells[i].source for i in code])]
    sliced = nbformat.v4.new_notebook(metadata=nb.metadata, cells=[nb.cells[i] for i in kept])
    seconds = kernel.run(sliced, fresh=False, allow_errors=True)
    outcomes = check_outcomes(sliced)
    assert outcomes, f"{source.name}: exercises {exercises} but no cell calls a check_* function"
    for o in outcomes:
        cell = kept[o.cell]  # its index in the exercise notebook
        assert o.error is not None, f"{source.name} cell {cell}: {o.checks} PASSED with the blanks unfilled"
        assert o.error.split(":")[0] in BLANK_ERRORS, f"{source.name} cell {cell} ({o.checks}): {o.error}"
        assert "passed" not in _stdout(sliced.cells[o.cell]), f"{source.name} cell {cell}: a check of {o.checks} passed"
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for c in sliced.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    raised = set(re.findall(r"NotImplementedError: Exercise (\d+\.\d+)", "\n".join(errors)))
    missing = [e for e in exercises if e not in raised]
    assert not missing, f"{source.name}: the blanks of exercises {missing} are never reached by a cell (call their checks)"
    assert raised <= set(exercises), f"{source.name}: blanks of other chapters raised: {sorted(raised - set(exercises))}"
    print(f"{source.stem}: exercise run {seconds:.0f} s ({len(kept)} of {len(code)} code cells)")
