"""`pvlens generate` on the tiny model: steering options, checks before the model loads."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import pvlens
from pvlens.cli import app
from pvlens.core.steering import Steering
from pvlens.vectors import PersonaVectors


@pytest.fixture
def vectors_file(tiny, tmp_path):
    table = torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model, generator=torch.Generator().manual_seed(0))
    return PersonaVectors({"response_avg": table}, {}).save(tmp_path / "vecs.safetensors"), table


@pytest.fixture
def calls(tiny, monkeypatch):
    """Load the tiny model instead of the default one; record what generate was asked."""
    seen: list[dict] = []
    real_generate = pvlens.generate

    def generate(model, prompts, **kw):
        seen.append(kw)
        return real_generate(model, prompts, **kw)

    monkeypatch.setattr(pvlens, "load_model", lambda *a, **kw: tiny)
    monkeypatch.setattr(pvlens, "generate", generate)
    return seen


def _run(*args: str):
    return CliRunner().invoke(app, ["generate", *args, "--max-new-tokens", "3"])


def test_generate_steered_at_one_layer_and_incrementally(vectors_file, calls):
    path, table = vectors_file
    out = _run("Hi", "--steer", str(path), "--layer", "0", "--alpha", "2")
    assert out.exit_code == 0, out.output
    assert out.output.startswith("> Hi\n")
    (one,) = calls[-1]["steer"]
    assert isinstance(one, Steering) and (one.layer, one.alpha, one.positions) == (0, 2.0, "response")
    out = _run("Hi", "--steer", str(path), "--incremental", "--alpha", "2", "--positions", "all")
    assert out.exit_code == 0, out.output
    steers = calls[-1]["steer"]
    assert [s.layer for s in steers] == [0, 1] and all(s.positions == "all" for s in steers)
    torch.testing.assert_close(sum(s.alpha * s.vector for s in steers), 2.0 * table[-1].double())
    out = _run("Hi", "--steer", str(path))  # no --layer: the middle block
    assert out.exit_code == 0 and calls[-1]["steer"][0].layer == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steer", "missing.safetensors"], "does not exist"),
        (["--alpha", "nan"], "finite"),
        (["--positions", "middle"], "positions"),
    ],
)
def test_generate_refuses_bad_arguments_before_loading(monkeypatch, args, message):
    def no_model(*a, **kw):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(pvlens, "load_model", no_model)
    out = _run("Hi", *args)
    assert out.exit_code != 0
    assert message in out.output
