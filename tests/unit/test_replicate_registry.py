"""`pvlens replicate`'s registry: keyed reuse, refusal of changed inputs, selection, RESULT parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pvlens.errors import InputError
from pvlens.io.runs import StaleRunError
from pvlens.replicate import Context, Experiment, load_result, run_experiment, select
from pvlens.replicate.benchmarks import parse_results
from pvlens.replicate.experiments import REGISTRY


def _experiment(calls: list[int], size: dict[str, int]) -> Experiment:
    def run(ctx: Context, folder: Path) -> dict[str, Any]:
        calls.append(1)
        return {"value": size["n"] * 2}

    return Experiment("toy", run, lambda ctx: {"n": size["n"]}, 0.1, "a toy")


def test_same_inputs_reuse_the_result_and_changed_inputs_are_refused(tmp_path: Path) -> None:
    calls: list[int] = []
    size = {"n": 3}
    exp, ctx = _experiment(calls, size), Context(tmp_path, quick=True)
    first = run_experiment(exp, ctx)
    assert first.results == {"value": 6} and first.quick and calls == [1]
    assert load_result(tmp_path / "toy" / "results.json") == first
    assert run_experiment(exp, ctx) == first and calls == [1]  # reused, not rerun
    size["n"] = 4
    with pytest.raises(StaleRunError, match=r"n: 3 → 4"):
        run_experiment(exp, ctx)
    assert calls == [1]


def test_overwrite_reruns_only_entries_whose_inputs_changed(tmp_path: Path) -> None:
    calls: list[int] = []
    size = {"n": 3}
    exp = _experiment(calls, size)
    run_experiment(exp, Context(tmp_path, quick=True))
    again = Context(tmp_path, quick=True, overwrite=True)
    run_experiment(exp, again)
    assert calls == [1]  # same inputs: still reused
    size["n"] = 5
    assert run_experiment(exp, again).results == {"value": 10} and calls == [1, 1]
    assert run_experiment(exp, Context(tmp_path, quick=True)).results == {"value": 10}  # the new record


def test_overwrite_restarts_a_native_entry_that_refuses(tmp_path: Path) -> None:
    calls: list[int] = []

    def run(ctx: Context, folder: Path) -> dict[str, Any]:
        calls.append(1)
        if (folder / "old").exists():
            raise StaleRunError("made with other inputs")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "out.json").write_text("{}")
        return {}

    exp = Experiment("native", run, lambda ctx: {}, 0.1, "a native toy", native="out.json")
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "old").write_text("x")
    with pytest.raises(StaleRunError):
        run_experiment(exp, Context(tmp_path))
    run_experiment(exp, Context(tmp_path, overwrite=True))
    assert calls == [1, 1, 1] and not (tmp_path / "native" / "old").exists()


def test_a_run_killed_before_its_results_runs_again(tmp_path: Path) -> None:
    calls: list[int] = []
    exp, ctx = _experiment(calls, {"n": 1}), Context(tmp_path)
    run_experiment(exp, ctx)
    (tmp_path / "toy" / "results.json").unlink()
    assert run_experiment(exp, ctx).results == {"value": 2} and calls == [1, 1]


def test_select_keeps_registry_order_and_refuses_unknown_names() -> None:
    assert [e.name for e in select(REGISTRY, ["models", "monitoring"])] == ["monitoring", "models"]
    assert len(select(REGISTRY, None)) == len(REGISTRY)
    with pytest.raises(InputError, match="unknown experiment.*nope"):
        select(REGISTRY, ["models", "nope"])


def test_registry_covers_the_docs_measurements() -> None:
    assert {"validation", "mitigation_incremental", "monitoring", "screening", "extraction", "benchmarks",
            "ray", "models", "finetune_shift"} <= set(REGISTRY)
    assert all(e.minutes > 0 and e.what for e in REGISTRY.values())


def test_result_lines_are_parsed() -> None:
    out = ("noise\nRESULT generate_b1 ratio=1.28 target=1.0\n"
           "RESULT sae_end_to_end tokens_per_s=812 (first epoch: activations + training)\n"
           "RESULT ray_rates samples_per_s_1=0.5120 n=16 note=x\n")
    assert parse_results(out) == {"generate_b1": {"ratio": 1.28, "target": 1.0},
                                  "sae_end_to_end": {"tokens_per_s": 812.0},
                                  "ray_rates": {"samples_per_s_1": 0.512, "n": 16.0, "note": "x"}}


def test_quick_refuses_to_write_into_results(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pvlens.cli import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["replicate", "--quick", "--only", "models", "--out", "results"])
    assert res.exit_code != 0 and "must not overwrite" in res.output
    listing = CliRunner().invoke(app, ["replicate", "--list"])
    assert listing.exit_code == 0 and "screening" in listing.output and "min" in listing.output
