"""`pvlens replicate --report`: results/report.md laid out like the paper's sections, rendered with
the docs' renderers from whatever results files exist; missing entries say "not run yet"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from pvlens.cli import app
from pvlens.io.doctables import renderers
from pvlens.replicate.experiments import REGISTRY
from pvlens.replicate.report import OTHER_ENTRIES, SECTIONS, render_report, write_report

ROOT = Path(__file__).resolve().parents[2]
EXTRACTION = {"experiment": "extraction", "quick": True, "seconds": 90.0, "inputs_key": "k",
              "command": "pvlens replicate --only extraction",
              "results": {"trait": "evil", "split_half_cosine": [0.5, 0.61], "counts": {},
                          "sweep": {"rows": [{"layer": 1, "alpha": 0.0, "trait": 10.0},
                                             {"layer": 1, "alpha": 2.0, "trait": 30.0}],
                                    "spearman": {"1": 1.0}, "best_layer": 1, "best_alpha": 2.0}}}


def _results(tmp_path: Path) -> Path:
    """A results folder with the committed monitoring and validation runs, a quick extraction, and
    every other entry missing."""
    root = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "monitoring", root / "monitoring", ignore=shutil.ignore_patterns("run"))
    (root / "validation").mkdir()
    for f in (ROOT / "results" / "validation").glob("*.json"):
        shutil.copy(f, root / "validation" / f.name)
    (root / "extraction").mkdir()
    (root / "extraction" / "results.json").write_text(json.dumps(EXTRACTION))
    return root


def test_every_paper_section_is_reported_and_missing_entries_say_not_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # committed files outside the results folder are read from the repository root
    root = _results(tmp_path)
    text = render_report(root)
    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert titles[:len(SECTIONS)] == [f"## {i}. {s.title}" for i, s in enumerate(SECTIONS, 1)]
    monitoring = json.loads((root / "monitoring" / "results.json").read_text())
    assert renderers()["monitor_r"](monitoring) in text and renderers()["monitor"](monitoring) in text
    assert renderers()["extraction"](EXTRACTION) in text and "**quick run**" in text
    assert "wall time of the run that wrote it 1.5 min" in text
    assert "`finetune_shift` (`pvlens replicate --only finetune_shift`)" in text
    for missing in ("finetune_shift", "mitigation_arms", "screening_traits", "screening"):
        assert f"{root / missing / 'results.json'}`: **not run yet**" in text
    assert "Layer 15" in text  # the validation tables, from results/validation/15.json
    assert "Gap: No `pvlens replicate` entry" in text  # SAE decomposition has no entry
    assert "`sae/results/smollm2-135m-layer15.json` (committed, made by `pvlens sae decompose (make saes)`" in text


def test_an_unreadable_results_file_is_reported_not_hidden(tmp_path: Path) -> None:
    root = tmp_path / "results"
    (root / "finetune_shift").mkdir(parents=True)
    (root / "finetune_shift" / "results.json").write_text(json.dumps({"results": {}}))
    text = render_report(root)
    assert "present but could not be rendered by `shift`" in text


def test_sections_name_registry_entries_and_cover_every_entry() -> None:
    named = {src.entry for sec in SECTIONS for src in sec.sources if not src.committed}
    assert named <= set(REGISTRY)
    assert named | set(OTHER_ENTRIES) == set(REGISTRY)
    assert all(src.renderer in renderers() or src.renderer == "validation" for sec in SECTIONS for src in sec.sources)


def test_the_cli_writes_only_the_report(tmp_path: Path) -> None:
    root = _results(tmp_path)
    res = CliRunner().invoke(app, ["replicate", "--report", "--out", str(root)])
    assert res.exit_code == 0, res.output
    assert (root / "report.md").read_text() == render_report(root)
    assert sorted(p.name for p in root.iterdir()) == ["extraction", "monitoring", "report.md", "validation"]
    assert write_report(root) == root / "report.md"
