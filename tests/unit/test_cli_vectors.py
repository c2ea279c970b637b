"""`pvlens extract / sweep / compare / demo` through `pvlens.cli.main`: bad arguments give one
line and exit 2 before any model is loaded; a rerun with other inputs is refused."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

import pvlens
from pvlens.cli import main
from pvlens.vectors import PersonaVectors


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: validation must come first."""
    monkeypatch.setattr("pvlens.core.model.load_model", lambda *a, **k: pytest.fail("model loaded"))


@pytest.fixture
def vectors_dir(tmp_path):
    pv = PersonaVectors({"response_avg": torch.randn(4, 8)}, {"trait": "evil"})
    pv.save(tmp_path / "evil" / "vectors.safetensors")
    PersonaVectors({"response_avg": torch.randn(4, 8)}, {"trait": "humorous"}).save(
        tmp_path / "humorous" / "vectors.safetensors")
    return tmp_path


def _one_error_line(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["extract", "grumpy", "--out", "{tmp}/x"], "unknown trait"),
        (["extract", "evil", "--out", "{tmp}/x", "--preset", "gpu"], "unknown preset"),
        (["extract", "evil", "--out", "{tmp}/x", "--samples", "0"], "samples_per_pair"),
        (["extract", "evil", "--out", "{tmp}/x", "--pairing", "both"], "pairing"),
        (["sweep", "--vectors", "{tmp}/evil", "--questions", "-1"], "--questions must be at least 1"),
        (["sweep", "--vectors", "{tmp}/evil", "--layers", "1,4"], r"layers \[4\] are out of range"),
        (["sweep", "--vectors", "{tmp}/missing"], "does not exist"),
        (["sweep", "--vectors", "{tmp}/evil", "--trait", "grumpy"], "unknown trait"),
        (["compare", "{tmp}/evil", "{tmp}/humorous", "--layer", "-1"], "--layer -1 is out of range"),
        (["compare", "{tmp}/evil", "{tmp}/humorous", "--layer", "4"], r"layers 0\.\.3"),
        (["compare", "{tmp}/evil"], "two or more"),
        (["demo", "--out", "{tmp}/d", "--trait", "grumpy"], "unknown trait"),
    ],
)
def test_bad_arguments_are_one_line_exit_2_before_loading(argv, message, vectors_dir, no_model, capsys):
    code, text = run([a.replace("{tmp}", str(vectors_dir)) for a in argv], capsys)
    assert code == 2, text
    assert re.search(message, _one_error_line(text)), text


@pytest.mark.parametrize("alphas", ["0,nan", "0,inf", "0,two"])
def test_non_finite_or_bad_alphas_exit_2(alphas, vectors_dir, no_model, capsys):
    code, text = run(["sweep", "--vectors", str(vectors_dir / "evil"), "--alphas", alphas], capsys)
    assert code == 2 and "--alphas" in text, text


class HashJudge:
    def score_many(self, pairs, progress=False):
        return [90.0 if i % 2 == 0 else 10.0 for i in range(len(pairs))]

    def coherence_many(self, pairs, progress=False):
        return [float(50 + int(hashlib.md5(a.encode()).hexdigest(), 16) % 50) for _, a in pairs]

    def describe(self):
        return {"kind": "hash-test"}


def test_extract_rerun_with_other_seed_refuses_then_overwrite(tmp_path, monkeypatch, capsys):
    tiny = pvlens.tiny_model()
    monkeypatch.setattr("pvlens.core.model.load_model", lambda *a, **k: tiny)
    monkeypatch.setattr("pvlens.judges.load_judge", lambda *a, **k: HashJudge())
    base = ["extract", "evil", "--out", str(tmp_path), "--preset", "tiny", "--pairing", "sample"]
    code, text = run(base, capsys)
    assert code == 0 and "kept pos" in text, text
    code, text = run([*base, "--seed", "1"], capsys)
    assert code == 2 and "seed: 0 → 1" in _one_error_line(text) and "--overwrite" in text
    code, text = run([*base, "--seed", "1", "--overwrite"], capsys)
    assert code == 0, text
    assert PersonaVectors.load(tmp_path).metadata["seed"] == 1


def test_compare_writes_cosines(vectors_dir, capsys):
    out = vectors_dir / "cmp"
    code, text = run(["compare", str(vectors_dir / "evil"), str(vectors_dir / "humorous"),
                      "--layer", "1", "--out", str(out)], capsys)
    assert code == 0, text
    assert (out / "cosines.json").exists() and (out / "cosine_layer1.png").exists()
