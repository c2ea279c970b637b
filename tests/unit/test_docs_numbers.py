"""No hand-typed results tables in the docs: a markdown table with numeric result cells must sit
inside a generated block (pvlens.io.doctables, or docs/validation.md's `pvlens validate --report`
block), unless it is on the commented allowlist below.

"Numeric result cell": a body cell that, outside `code spans`, holds a decimal number (0.91,
−8.67, 17.2 / 17.1) or a number in scientific notation (5.5e-6). Option and config tables write
their defaults as code (`1.0`, `"auto"`) and are not flagged; integer counts alone are not flagged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]

GENERATED = re.compile(
    r"<!-- (?:generated: \S+ \w+|validation-tables:start[^>]*) -->.*?<!-- (?:/generated|validation-tables:end) -->", re.S)
CODE = re.compile(r"`[^`]*`")
NUMBER = re.compile(r"\d+\.\d+|\d(?:\.\d+)?e[-−]\d")
SEPARATOR = re.compile(r"^\|[\s:|-]+\|\s*$")

# (doc, start of the header row) → why this hand-typed numeric table is allowed. Empty: every
# results table is generated (docs/sae.md from sae/results/, docs/datasets.md from the shipped
# manifest, the rest from results/); a table whose run is not committed is a pending marker.
ALLOWLIST: dict[tuple[str, str], str] = {}


def tables(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, header row, body rows) of every markdown table in `text`."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and SEPARATOR.match(lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            yield i + 1, lines[i], lines[i + 2:j]
            i = j
        else:
            i += 1


def numeric_cells(body: list[str]) -> list[str]:
    """Body cells (after the first column, which names the row) holding a result number."""
    cells = [c.strip() for row in body for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))[1:]]
    return [c for c in cells if NUMBER.search(CODE.sub("", c))]


def hand_typed_tables(text: str) -> list[tuple[int, str, list[str]]]:
    """Numeric tables outside generated blocks (line numbers kept: blocks are blanked, not cut)."""
    outside = GENERATED.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return [(ln, head, hits) for ln, head, body in tables(outside) if (hits := numeric_cells(body))]


def allowed(doc: str, head: str) -> bool:
    return any(d == doc and head.startswith(prefix) for d, prefix in ALLOWLIST)


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_no_hand_typed_results_tables(doc: Path) -> None:
    bad = [f"{doc.name}:{ln}: {head[:80]} (e.g. {hits[:3]})"
           for ln, head, hits in hand_typed_tables(doc.read_text()) if not allowed(doc.name, head)]
    assert not bad, ("numeric results tables outside a generated block — generate them from a results "
                     "JSON (pvlens replicate + pvlens.io.doctables) or, for a non-result table, add it "
                     "to ALLOWLIST with a comment:\n" + "\n".join(bad))


def test_the_lint_flags_a_typed_results_table_and_not_an_options_table() -> None:
    typed = "| arm | trait |\n|---|---|\n| none | 53.7 |\n"
    options = "| option | default |\n|---|---|\n| `--alpha` | `1.0` |\n| `--n` | 20 |\n"
    generated = "<!-- generated: r.json x -->\n" + typed + "<!-- /generated -->\n"
    assert [h for _, h, _ in hand_typed_tables(typed)] == ["| arm | trait |"]
    assert hand_typed_tables(options) == []
    assert hand_typed_tables(generated) == []
    assert [ln for ln, _, _ in hand_typed_tables("intro\n\n" + generated + "\n" + typed)] == [9]
    assert numeric_cells(["| Gemma | 5.5e-6 |"]) == ["5.5e-6"]
    assert numeric_cells(["| `--max-push` | `1.0` |"]) == []


NORM = re.compile(r"‖v(?P<sub>[₀-₉]*)‖ (?:=|≈) (?P<x>\d+\.\d+)")
SUBSCRIPT = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")


def test_quoted_norms_are_the_shipped_evil_vectors() -> None:
    """Prose quotes ‖v_L‖ of the shipped evil vector (bare ‖v‖: layer 15, the default layer)."""
    from pvlens import PersonaVectors

    norms = PersonaVectors.builtin("evil").norms()
    quoted = [(doc.name, m) for doc in DOCS for m in NORM.finditer(GENERATED.sub("", doc.read_text()))]
    assert len(quoted) >= 5  # steering, quickstart, sweep, finetune, serve
    for name, m in quoted:
        layer = int(m["sub"].translate(SUBSCRIPT) or 15)
        places = len(m["x"].split(".")[1])
        assert round(float(norms[layer]), places) == float(m["x"]), f"{name}: {m[0]} but the shipped ‖v‖ is {norms[layer]:.3f}"


def test_the_off_target_norm_range_is_the_shipped_vectors() -> None:
    """docs/directions.md quotes the range of the three shipped vectors' norms at layer 15."""
    from pvlens import PersonaVectors

    m = re.search(r"similar norms there, (\d+\.\d)–(\d+\.\d)", (ROOT / "docs" / "directions.md").read_text())
    assert m is not None
    norms = [float(PersonaVectors.builtin(t).norms()[15]) for t in ("evil", "sycophantic", "hallucinating")]
    assert (round(min(norms), 1), round(max(norms), 1)) == (float(m[1]), float(m[2]))
