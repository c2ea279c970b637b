"""The committed validation results reproduce on the default model (hand-written sets, layer 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pvlens
from pvlens.vectors.validation_report import load_results
from pvlens.vectors.validation_run import ValidationConfig, run_validation

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_layer15_matches_committed_results() -> None:
    torch.set_num_threads(2)
    committed = {r.layer: r for r in load_results(ROOT / "results" / "validation")}[15]
    model = pvlens.load_model()
    cfg = ValidationConfig(n_null=committed.n_null, n_bootstrap=committed.n_bootstrap, seed=committed.seed,
                           reductions=["response_avg"])
    [fresh] = run_validation(model, [15], cfg)
    assert fresh.model_fingerprint == committed.model_fingerprint
    for name, res in fresh.results["response_avg"].items():
        old = committed.results["response_avg"][name]
        for vector, cell in res.cells.items():
            assert cell.auroc == pytest.approx(old.cells[vector].auroc, abs=0.01), (name, vector)
        assert res.null.p95 == pytest.approx(old.null.p95, abs=0.01)
    assert fresh.results["response_avg"]["evil"].cells["evil"].auroc >= 0.8
