"""`pvlens replicate --quick`: every registry entry's tiny version runs and writes schema-valid
results that its docs renderers can render (tiny random model; benchmarks run one tiny generation
on the default model). `ray` is left out: starting a Ray cluster with two model-loading workers
takes minutes on a shared 2-core machine; its quick version runs with
`pvlens replicate --quick --only ray`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvlens.io.doctables import renderers
from pvlens.replicate import Context, run_experiment
from pvlens.replicate.experiments import REGISTRY

RENDERERS = {"monitoring": ["monitor", "monitor_r"], "screening": ["screen", "screen_auroc"], "models": ["models"],
             "benchmarks": ["bench"], "finetune_shift": ["shift"], "extraction": ["extraction"],
             "judges": ["judge_eval", "judge_parts", "judge_coherence", "judge_fluency"]}
QUICK = [n for n in REGISTRY if n not in {"ray"}]


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("replicate")
    ctx = Context(out, quick=True)
    return out, {name: run_experiment(REGISTRY[name], ctx) for name in QUICK}


@pytest.mark.parametrize("name", QUICK)
def test_quick_entry_writes_schema_valid_results(quick_results, name: str) -> None:
    out, results = quick_results
    res, exp = results[name], REGISTRY[name]
    assert res.quick and res.experiment == name and res.results
    if exp.native:
        path = Path(res.results["native_file"])
        assert path.parent == out / name and path.exists()
        assert exp.check is not None
        exp.check(path)
    else:
        saved = (out / name / "results.json").read_text()
        assert '"quick": true' in saved and (out / name / "inputs.json").exists()
    table = renderers()
    for kind in RENDERERS.get(name, []):
        text = table[kind](res.model_dump(mode="json"))
        lines = text.strip().splitlines()
        assert lines[0].startswith("|") and lines[1].startswith("|---") and len(lines) >= 3


def test_quick_extraction_renders_its_prose_and_the_report_covers_every_section(quick_results) -> None:
    from pvlens.replicate.report import SECTIONS, render_report

    out, results = quick_results
    doc = results["extraction"].model_dump(mode="json")
    for kind in ("extraction_summary", "extraction_stability"):
        assert renderers()[kind](doc).startswith("(Quick run on the tiny random model")
    report = render_report(out)
    assert all(f"## {i}. {s.title}" in report for i, s in enumerate(SECTIONS, 1))
    assert "could not be rendered" not in report and "**quick run**" in report


def test_mitigation_quick_result_renders_with_the_mitigation_renderer(quick_results) -> None:
    import json

    out, _ = quick_results
    doc = json.loads((out / "mitigation_incremental" / "results.json").read_text())
    rows = renderers()["mitigation"](doc).strip().splitlines()
    assert len(rows) >= 4 and all(r.startswith("|") for r in rows)  # header, rule, base, none, prevent...


def test_a_rerun_reuses_every_quick_result(quick_results) -> None:
    out, results = quick_results
    ctx = Context(out, quick=True)
    for name in ("models", "monitoring", "extraction"):
        again = run_experiment(REGISTRY[name], ctx)
        assert again.seconds == results[name].seconds and again.results == results[name].results
