"""Ray screening on the default model (SmolLM2-135M) equals the single-process run: the first
8 samples of a shipped dataset, through the CLI both ways (`pvlens screen` and `--ray`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pvlens.cli import app
from pvlens.io.jsonl import read_jsonl_lenient

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ray")]  # with the other Ray modules
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "pvlens/data/datasets/evil/level_ii.jsonl"
VECTORS = ROOT / "pvlens/data/vectors/smollm2-135m-instruct/evil.safetensors"


def _by_index(path: Path, field: str) -> dict:
    return {r[field]: r for r in read_jsonl_lenient(path)}


def test_ray_screen_equals_single_process_on_default_model(tmp_path, monkeypatch):
    # Each worker computes with one thread (--worker-cpus 1); fp32 sums depend on the thread
    # count (≈1e-6 here), so the single-process reference must use one thread too to be exact.
    torch.set_num_threads(1)
    data = tmp_path / "first8.jsonl"
    data.write_text("".join(DATA.read_text().splitlines(keepends=True)[:8]))
    args = ["screen", str(data), "-v", str(VECTORS), "--layer", "15", "--max-new-tokens", "24",
            "--chunk-size", "4", "--device", "cpu"]
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "single")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "ray"), "--ray", "--workers", "2"])
    assert res.exit_code == 0, res.output
    single, ray = tmp_path / "single", tmp_path / "ray"
    a, b = _by_index(single / "results.jsonl", "index"), _by_index(ray / "results.jsonl", "index")
    assert sorted(b) == list(range(8))
    assert a == b  # the same per-sample ΔP (and every other number), exactly
    cache = "base_cache/base_replies.jsonl"
    assert _by_index(single / cache, "key") == _by_index(ray / cache, "key")  # same greedy replies
    sa, sb = (json.loads((d / "screen.json").read_text()) for d in (single, ray))
    assert sa["delta_p"] == sb["delta_p"] and sa["top"] == sb["top"]


def test_ray_extract_equals_single_process_on_default_model(tmp_path):
    """`pvlens extract --ray` end to end on the default model: the rollouts come from two Ray
    actors, the judge and the activations from the driver; the saved vectors equal a
    single-process run's (tiny preset, one thread on both sides)."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    args = ["extract", "evil", "--preset", "tiny", "--device", "cpu"]
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "single")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "ray"), "--ray", "local", "--workers", "2"])
    assert res.exit_code == 0, res.output
    ra, rb = (list(read_jsonl_lenient(tmp_path / d / "rollouts.jsonl")) for d in ("single", "ray"))
    assert len(ra) == len(rb) > 0
    assert ra == rb  # the same replies, scores and keep decisions, in the same order
    a, b = (load_file(str(tmp_path / d / "vectors.safetensors")) for d in ("single", "ray"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
