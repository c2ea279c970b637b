"""Sweep bookkeeping, automatic choice, cross-trait geometry, report."""

from __future__ import annotations

import json

import pytest
import torch

import pvlens
from pvlens.io.runs import StaleRunError
from pvlens.vectors import PersonaVectors
from pvlens.vectors.compare import cosine_matrix, pca
from pvlens.vectors.sweep import SweepConfig, summarise, sweep


class LengthJudge:
    """Trait = answer length (capped), coherence fixed: deterministic stand-in."""

    def score_many(self, pairs):
        return [min(100.0, float(len(a))) for _, a in pairs]

    def coherence_many(self, pairs):
        return [70.0] * len(pairs)

    def describe(self):
        return {"kind": "length-test"}


def _answers(trait, coh, n=2):
    return [{"question": "q", "answer": "a", "trait": trait, "coherence": coh}] * n


def test_summarise_choice_respects_coherence_and_reports_rho():
    cells = {
        (3, 0.0): _answers(10, 90), (3, 2.0): _answers(40, 80), (3, 4.0): _answers(70, 60),
        (3, 8.0): _answers(95, 20),  # strongest but incoherent
        (5, 0.0): _answers(10, 90), (5, 2.0): _answers(20, 85), (5, 4.0): _answers(15, 85),
    }
    res = summarise(cells, coherence_min=50)
    assert (res.best_layer, res.best_alpha) == (3, 4.0)
    assert res.spearman[3] == pytest.approx(1.0)
    assert res.spearman[5] < 1.0
    layers, alphas, grid = res.grid("trait")
    assert layers == [3, 5] and alphas == [0.0, 2.0, 4.0, 8.0]
    assert grid[0, 3] == 95 and torch.isnan(torch.tensor(grid[1, 3]))


def test_sweep_runs_resumes_and_shares_alpha_zero(tmp_path, monkeypatch):
    model = pvlens.tiny_model()
    vecs = PersonaVectors({"response_avg": torch.randn(model.cfg.n_layers, model.cfg.d_model)}, {"trait": "evil"})
    cfg = SweepConfig(layers=[0, 1], alphas=[0.0, 2.0], n_questions=2, samples=1, max_new_tokens=6)
    res = sweep(model, vecs, "evil", tmp_path, judge=LengthJudge(), cfg=cfg)
    assert len(res.rows) == 4
    lines = (tmp_path / "sweep.jsonl").read_text().splitlines()
    zero = [json.loads(x)["answers"] for x in lines if json.loads(x)["alpha"] == 0.0]
    assert len(zero) == 2 and zero[0] == zero[1]  # α=0 generated once, reused per layer

    monkeypatch.setattr("pvlens.vectors.evaluate.bulk_generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = sweep(model, vecs, "evil", tmp_path, judge=LengthJudge(), cfg=cfg)
    assert again.rows == res.rows


def test_cosine_matrix_and_pca_on_planted_vectors():
    torch.manual_seed(0)
    a = torch.randn(4, 16)
    b = torch.randn(4, 16)
    va = PersonaVectors({"response_avg": a}, {"trait": "a"})
    vb = PersonaVectors({"response_avg": -2 * a}, {"trait": "b"})
    vc = PersonaVectors({"response_avg": b}, {"trait": "c"})
    cos = cosine_matrix([va, vb, vc])
    assert cos.shape == (4, 3, 3)
    torch.testing.assert_close(cos[:, 0, 1], torch.full((4,), -1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.diagonal(cos, dim1=1, dim2=2), torch.ones(4, 3), atol=1e-5, rtol=0)
    coords, explained = pca([va, vb, vc], layer=1)
    assert coords.shape == (3, 2) and explained.sum() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="same model"):
        cosine_matrix([va, PersonaVectors({"response_avg": torch.randn(5, 16)})])


# --- a sweep folder resumes only with the same inputs (issue 11 item 1) ------------------------


class OtherLengthJudge(LengthJudge):
    def describe(self):
        return {"kind": "length-test", "endpoint": "http://127.0.0.1:9"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    model = pvlens.tiny_model()
    torch.manual_seed(0)
    vecs = PersonaVectors({"response_avg": torch.randn(model.cfg.n_layers, model.cfg.d_model)}, {"trait": "evil"})
    cfg = SweepConfig(layers=[1], alphas=[0.0, 2.0], n_questions=2, samples=1, max_new_tokens=3)
    out = tmp_path_factory.mktemp("swept")
    res = sweep(model, vecs, "evil", out, judge=LengthJudge(), cfg=cfg)
    return model, vecs, cfg, out, res


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("vectors", "vectors"),
        ("judge", "judge.endpoint"),
        ({"n_questions": 3}, "questions"),
        ({"samples": 2}, "samples"),
        ({"temperature": 0.2}, "sampling.temperature"),
        ({"max_new_tokens": 5}, "sampling.max_new_tokens"),
        ({"seed": 4}, "sampling.seed"),
        ({"positions": "all"}, "positions"),
    ],
)
def test_sweep_rerun_with_other_inputs_refuses(swept, change, named, monkeypatch):
    model, vecs, cfg, out, _ = swept
    monkeypatch.setattr("pvlens.vectors.evaluate.bulk_generate", lambda *a, **k: pytest.fail("generated"))
    judge = OtherLengthJudge() if change == "judge" else LengthJudge()
    other = vecs * 2.0 if change == "vectors" else vecs
    new_cfg = cfg.changed(**change) if isinstance(change, dict) else cfg
    with pytest.raises(StaleRunError, match=rf"{named}.*--overwrite"):
        sweep(model, other, "evil", out, judge=judge, cfg=new_cfg)


def test_sweep_grows_its_grid_and_overwrite_discards(swept, tmp_path):
    import shutil

    model, vecs, cfg, out, res = swept
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    grown = sweep(model, vecs, "evil", folder, judge=LengthJudge(),
                  cfg=cfg.changed(layers=[0, 1], coherence_min=10.0, batch_size=1))
    assert len(grown.rows) == 4 and grown.cell(1, 2.0) == res.cell(1, 2.0)
    again = sweep(model, vecs * 2.0, "evil", folder, judge=LengthJudge(), cfg=cfg, overwrite=True)
    assert len(again.rows) == 2
    assert len((folder / "sweep.jsonl").read_text().splitlines()) == 2  # old cells discarded


def test_sweep_refuses_layers_out_of_range_and_config_typos(swept, tmp_path):
    from pydantic import ValidationError

    from pvlens.errors import InputError

    model, vecs, cfg, _, _ = swept
    with pytest.raises(InputError, match=r"layers \[2\] are out of range.*0\.\.1"):
        sweep(model, vecs, "evil", tmp_path, judge=LengthJudge(), cfg=cfg.changed(layers=[2]))
    with pytest.raises(ValidationError, match="alpha"):
        SweepConfig(alpha=[1.0])
    with pytest.raises(ValidationError, match="n_questions"):
        SweepConfig(n_questions=-1)


def test_incremental_sweep_keys_cells_by_alpha_and_resumes(tmp_path, monkeypatch):
    from pvlens.vectors.evaluate import evaluate_steered
    from pvlens.vectors.sweep import sweep_questions

    model = pvlens.tiny_model()
    vecs = PersonaVectors({"response_avg": torch.randn(model.cfg.n_layers, model.cfg.d_model)}, {"trait": "evil"})
    cfg = SweepConfig(layers=[0], alphas=[0.0, 2.0], n_questions=2, samples=1, max_new_tokens=6, incremental=True)
    res = sweep(model, vecs, "evil", tmp_path, judge=LengthJudge(), cfg=cfg)
    assert [(r["layer"], r["alpha"]) for r in res.rows] == [("all", 0.0), ("all", 2.0)]
    # the α = 2 cell is the paper's all-layer incremental steering, not layer 0's
    questions = sweep_questions(pvlens.traits.load_trait("evil"), cfg)
    want = evaluate_steered(model, questions, LengthJudge(), steer=pvlens.incremental(vecs.vectors, 2.0),
                            sampling=cfg, samples=1)
    logged = [json.loads(x) for x in (tmp_path / "sweep.jsonl").read_text().splitlines()]
    assert logged[1]["layer"] == "all" and logged[1]["answers"] == want
    monkeypatch.setattr("pvlens.vectors.evaluate.bulk_generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert sweep(model, vecs, "evil", tmp_path, judge=LengthJudge(), cfg=cfg).rows == res.rows
    with pytest.raises(StaleRunError, match="incremental"):  # a single-layer sweep is another folder
        sweep(model, vecs, "evil", tmp_path, judge=LengthJudge(), cfg=cfg.changed(incremental=False))
