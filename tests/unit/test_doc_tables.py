"""Every generated table in docs/ equals what its committed JSON renders (pvlens.io.doctables)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pvlens.io.doctables import generated_blocks, refresh_doc, render_block

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_the_mitigation_doc_has_a_generated_table():
    blocks = generated_blocks((ROOT / "docs" / "finetune.md").read_text())
    assert ("results/mitigation_incremental/results.json", "mitigation") in [(s, k) for s, k, _ in blocks]


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_tables_match_their_json(doc):
    for src, kind, body in generated_blocks(doc.read_text()):
        assert body == render_block(src, kind, ROOT), (
            f"{doc.name}: the table from {src} differs from the JSON; regenerate it with "
            f"`python -m pvlens.io.doctables docs/{doc.name}` after checking the run")


def test_a_changed_number_is_caught_and_refresh_fixes_it(tmp_path):
    res = {"layer": 15, "summary": [{
        "arm": "none", "n": 20, "n_seeds": 3, "trait": {"mean": 50.0, "lo": 40.0, "hi": 60.0},
        "coherence": {"mean": 80.0, "lo": 78.0, "hi": 82.0}, "mc_accuracy": {"mean": 0.6, "lo": 0.5, "hi": 0.7},
        "perplexity": {"mean": None, "lo": None, "hi": None}, "shift": {"mean": 3.0, "lo": 2.0, "hi": 4.0}}]}
    (tmp_path / "r.json").write_text(json.dumps(res))
    doc = tmp_path / "d.md"
    doc.write_text("intro\n<!-- generated: r.json mitigation -->\nold\n<!-- /generated -->\nend\n")
    assert refresh_doc(doc, tmp_path)
    [(src, kind, body)] = generated_blocks(doc.read_text())
    assert "| none | 20 | 3 | 50.0 [40.0, 60.0] |" in body and body == render_block(src, kind, tmp_path)
    res["summary"][0]["trait"]["mean"] = 51.0
    (tmp_path / "r.json").write_text(json.dumps(res))
    assert body != render_block(src, kind, tmp_path)
    assert refresh_doc(doc, tmp_path) and "| none | 20 | 3 | 51.0 [40.0, 60.0] |" in doc.read_text()
    assert not refresh_doc(doc, tmp_path)  # up to date: unchanged


@pytest.mark.parametrize("doc", DOCS + [ROOT / "README.md"], ids=[d.name for d in DOCS] + ["README.md"])
def test_pending_markers_name_a_known_renderer(doc):
    from pvlens.io.doctables import pending_blocks, renderers

    for src, kind in pending_blocks(doc.read_text()):
        assert kind in renderers(), f"{doc.name}: pending table {src} names an unknown renderer {kind!r}"
        assert src.startswith("results/"), f"{doc.name}: a pending table waits for a results/ file, not {src}"


def test_a_pending_marker_becomes_a_block_once_its_results_exist(tmp_path):
    res = {"layer": 15, "summary": []}
    doc = tmp_path / "d.md"
    doc.write_text("intro\n<!-- pending: r.json mitigation -->\nend\n")
    assert not refresh_doc(doc, tmp_path)  # no results yet: unchanged, no numbers
    (tmp_path / "r.json").write_text(json.dumps(res))
    assert refresh_doc(doc, tmp_path)
    assert doc.read_text() == ("intro\n<!-- generated: r.json mitigation -->\n" + render_block("r.json", "mitigation", tmp_path)
                               + "<!-- /generated -->\nend\n")


def test_a_block_with_several_sources_gets_them_all(tmp_path, monkeypatch):
    from pvlens.io import doctables

    for name, k in (("a.json", 32), ("b.json", 64)):
        (tmp_path / name).write_text(json.dumps({"k": k}))
    seen: list[dict] = []
    monkeypatch.setattr(doctables, "renderers", lambda: {"probe": lambda d: seen.append(d) or "|x|\n"})
    assert render_block("a.json,b.json", "probe", tmp_path) == "|x|\n"
    assert seen == [{"sources": [{"k": 32}, {"k": 64}]}]


@pytest.mark.parametrize("doc", DOCS + [ROOT / "README.md"], ids=[d.name for d in DOCS] + ["README.md"])
def test_quoted_prose_numbers_come_from_their_results(doc):
    from pvlens.io.doctables import unbacked_numbers

    bad = unbacked_numbers(doc.read_text(), ROOT)
    assert not bad, (f"{doc.name}: numbers in a `<!-- numbers: ... -->` passage that its results file's tables "
                     f"do not hold (rerun, regenerate, and reword the prose): {bad}")


def test_the_prose_check_flags_a_drifted_number(tmp_path):
    from pvlens.io.doctables import rounds_to, unbacked_numbers

    res = {"layer": 15, "summary": [{
        "arm": "none", "n": 20, "n_seeds": 3, "trait": {"mean": 36.54, "lo": 33.3, "hi": 39.6},
        "coherence": {"mean": 80.0, "lo": 78.0, "hi": 82.0}, "mc_accuracy": {"mean": 0.6, "lo": 0.5, "hi": 0.7},
        "perplexity": {"mean": None, "lo": None, "hi": None}, "shift": {"mean": -4.24, "lo": -4.7, "hi": -3.8}}]}
    (tmp_path / "r.json").write_text(json.dumps(res))
    ok = "<!-- numbers: r.json mitigation -->\nthe trait rose to 36.5 [33.3, 39.6], shift −4.2 (`α = 0.5`)\n<!-- /numbers -->"
    assert unbacked_numbers(ok, tmp_path) == []
    assert unbacked_numbers(ok.replace("36.5", "36.6"), tmp_path) == ["r.json: 36.6"]
    assert rounds_to("0.125", "0.13") and rounds_to("0.125", "0.12") and not rounds_to("0.1", "0.10")
