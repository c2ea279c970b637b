"""On the default model: `pvlens vectors compare-directions` on a committed re-extraction
(results/directions/runs/sycophantic) rebuilds its PCA and probe directions from the rollouts as
the committed comparison has them, and writes the per-trait file with the paired differences
from the mean difference and the cosine with the shipped vector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pvlens.cli import app
from pvlens.vectors import PersonaVectors

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "results" / "directions" / "runs" / "sycophantic"
COMMITTED = ROOT / "results" / "directions"


def test_compare_directions_on_a_committed_extraction(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, [
        "vectors", "compare-directions", "--trait", "sycophantic", "--rollouts", str(RUN / "rollouts.jsonl"),
        "--alphas", "0,8", "--questions", "1", "--samples", "1", "--out", str(tmp_path),
    ])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "sycophantic.json").read_text())
    committed = json.loads((COMMITTED / "sycophantic.json").read_text())
    assert got["shipped_cosine"] == committed["shipped_cosine"]
    assert got["n_pairs"] == committed["n_pairs"] == 33
    for key in ("response_avg:pca", "response_avg:probe"):  # recomputed from the rollouts, not read back
        mine = PersonaVectors.load(tmp_path / "sycophantic.safetensors").tensors[key][got["layer"]]
        theirs = PersonaVectors.load(COMMITTED / "sycophantic.safetensors").tensors[key][got["layer"]]
        assert torch.nn.functional.cosine_similarity(mine, theirs, dim=0) > 0.99, key
    for measure in ("screening", "monitoring"):
        assert set(got["auroc"][measure]["vs_mean"]) == {"pca", "probe"}
    assert got["steering"]["probe"]["8"]["n"] == 1 and "vs_mean" in got["steering"]["probe"]["8"]["trait"]
