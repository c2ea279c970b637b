"""The course generator: one percent-format source → exercise (blanks) and solution notebooks;
the runtime phrase; `pvlens course check` on a toy chapter (a real kernel, a few seconds)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pvlens.course.build import build_chapter, chapters, check_notebook, fill_runtime
from pvlens.course.source import exercises_in, parse, read_chapter
from pvlens.errors import InputError

TOY = '''# %% [markdown]
# # Chapter 9: toy
# - measured: X min on a 2-core CPU

# %%
import math

# %% [markdown]
# ### Exercise 9.1 — double
# Difficulty: ●○○○○ · Importance: ●●○○○ · ~1 min

# %%
def double(x):
    # BEGIN SOLUTION
    return 2 * x
    # END SOLUTION


def check_double(fn):
    assert fn(3) == 6, "double(3) should be 6"
    print("✓ double passed")


check_double(double)

# %% [markdown]
# ### Exercise 9.2 — a top-level answer

# %%
# BEGIN SOLUTION
y = math.sqrt(16)
# END SOLUTION

# %%
assert y == 4
print("✓ y passed")  # noqa: a cell without a check_ call is not counted
'''


def test_parse_splits_markdown_and_code():
    cells = parse(TOY)
    assert [c.kind for c in cells] == ["markdown", "code", "markdown", "code", "markdown", "code", "code"]
    assert cells[0].text.splitlines()[0] == "# Chapter 9: toy"  # the comment prefix is stripped
    assert cells[1].text == "import math"


def test_blanks_replace_each_solution_at_its_indentation(tmp_path):
    (tmp_path / "09_toy.py").write_text(TOY)
    ex, sol = read_chapter(tmp_path / "09_toy.py")
    assert '    raise NotImplementedError("Exercise 9.1")' in ex[3].text
    assert "return 2 * x" not in ex[3].text and "return 2 * x" in sol[3].text
    assert ex[5].text == 'raise NotImplementedError("Exercise 9.2")'
    assert "BEGIN SOLUTION" not in sol[3].text + sol[5].text
    assert exercises_in(parse(TOY)) == ["9.1", "9.2"]


@pytest.mark.parametrize("bad, problem", [
    ("# %%\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "before any"),
    ("# %% [markdown]\n# ### Exercise 1.1 — x\n# %%\n# BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("# %% [markdown]\n# ### Exercise 1.1 — x\n# %%\nx = 1\n# END SOLUTION\n", "without a matching"),
])
def test_malformed_markers_are_refused(tmp_path, bad, problem):
    (tmp_path / "01_bad.py").write_text(bad)
    with pytest.raises(InputError, match=problem):
        read_chapter(tmp_path / "01_bad.py")


def test_chapter_selection_by_number_or_name(tmp_path):
    folder = tmp_path / "course" / "chapters"
    folder.mkdir(parents=True)
    for name in ("00_a.py", "01_b.py", "02_c.py"):
        (folder / name).write_text("# %%\n")
    assert [p.stem for p in chapters(tmp_path)] == ["00_a", "01_b", "02_c"]
    assert [p.stem for p in chapters(tmp_path, "2,00_a")] == ["02_c", "00_a"]
    with pytest.raises(InputError, match="no chapter '7'"):
        chapters(tmp_path, "7")


def test_runtime_phrase_is_filled():
    assert fill_runtime("- measured: X min on a 2-core CPU\n", 150) == "- measured: 2.5 min on a 2-core CPU\n"


def test_build_and_check_a_toy_chapter(tmp_path):
    source = tmp_path / "09_toy.py"
    source.write_text(TOY)
    seconds = build_chapter(source, tmp_path / "out")
    assert seconds is not None and seconds > 0
    runtimes = json.loads((tmp_path / "out" / "runtimes.json").read_text())
    entry = runtimes["chapters"]["09_toy"]
    assert entry["seconds"] == round(seconds, 1) and entry["cpu_seconds"] > 0  # the kernel's CPU is counted
    assert "measured: X" not in source.read_text()  # the full build filled the header
    solution = tmp_path / "out" / "solutions" / "09_toy.ipynb"
    assert "✓ double passed" in solution.read_text()  # outputs are stored
    [ok] = check_notebook(solution)
    assert ok.checks == ("check_double",) and ok.error is None
    [blank] = check_notebook(tmp_path / "out" / "exercises" / "09_toy.ipynb")
    assert blank.error == "NotImplementedError: Exercise 9.1"


def test_check_names_a_missing_notebook(tmp_path):
    with pytest.raises(InputError, match="no notebook"):
        check_notebook(Path(tmp_path / "nope.ipynb"))


def test_progress_bars_are_dropped_but_warnings_kept():
    import nbformat

    from pvlens.course.build import strip_progress

    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rrollouts:  50%|█  | 12/24 [00:03<00:03,  3.1it/s]"),
                    nbformat.v4.new_output("stream", name="stderr", text="UserWarning: the vector is zero"),
                    nbformat.v4.new_output("stream", name="stdout", text="12/24 [kept]")]
    nb = nbformat.v4.new_notebook(cells=[cell])
    strip_progress(nb)
    assert [o["text"] for o in nb.cells[0].outputs] == ["UserWarning: the vector is zero", "12/24 [kept]"]


def test_cli_builds_and_checks(tmp_path):
    from typer.testing import CliRunner

    from pvlens.cli import app

    folder = tmp_path / "course" / "chapters"
    folder.mkdir(parents=True)
    (folder / "09_toy.py").write_text(TOY)
    runner = CliRunner()
    built = runner.invoke(app, ["course", "build", "9", "--root", str(tmp_path), "--no-run"])
    assert built.exit_code == 0, built.output
    assert (tmp_path / "course" / "exercises" / "09_toy.ipynb").exists()
    checked = runner.invoke(app, ["course", "check", "9", "--root", str(tmp_path)])  # the blank exercise notebook
    assert checked.exit_code == 1
    assert "✗ check_double" in checked.output and "NotImplementedError: Exercise 9.1" in checked.output
    assert "0/1 check cells pass" in checked.output


def test_course_pins_float32_unless_the_user_chose() -> None:
    """The checks compare fp32 student code with pvlens's references: bf16 (AMX CPUs) must not leak in."""
    import subprocess
    import sys

    code = "import pvlens.course; from pvlens.core.device import fast_dtype; print(fast_dtype('cpu'))"
    env = {k: v for k, v in os.environ.items() if k != "PVLENS_COMPUTE_DTYPE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "torch.float32"
    env["PVLENS_COMPUTE_DTYPE"] = "bfloat16"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "torch.bfloat16"
