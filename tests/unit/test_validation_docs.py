"""docs/validation.md's tables are generated from results/validation/*.json: fail when they disagree."""

from __future__ import annotations

from pathlib import Path

from pvlens.vectors.validation_report import doc_tables, load_results, render_tables

ROOT = Path(__file__).resolve().parents[2]


def test_docs_tables_match_committed_results() -> None:
    results = load_results(ROOT / "results" / "validation")
    assert results, "results/validation holds no <layer>.json"
    doc = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
    assert doc_tables(doc) == render_tables(results), (
        "docs/validation.md disagrees with results/validation/*.json; "
        "regenerate it with `pvlens validate --report`"
    )


def test_committed_results_are_full_size() -> None:
    for r in load_results(ROOT / "results" / "validation"):
        assert r.n_null >= 200 and r.n_bootstrap >= 1000
        for sets in r.results.values():
            assert set(sets) == {"evil", "sycophantic", "hallucinating"}
            assert all(s.n >= 100 and s.null.n == r.n_null for s in sets.values())
