"""The one vector-coercion route (vectors.coerce) and the one evaluation path (vectors.evaluate)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pvlens.core.config import SamplingConfig
from pvlens.vectors import PersonaVectors
from pvlens.vectors.coerce import as_persona_vectors, direction, unit_direction, vector_table
from pvlens.vectors.evaluate import JudgedAnswer, evaluate_steered, mean_score


def _pv(n_layers: int = 4, d: int = 8, seed: int = 0) -> PersonaVectors:
    g = torch.Generator().manual_seed(seed)
    return PersonaVectors({"response_avg": torch.randn(n_layers, d, generator=g),
                           "last_prompt": torch.randn(n_layers, d, generator=g)}, {"trait": "evil"})


# --- coerce --------------------------------------------------------------------------------------


def test_files_and_run_folders_load_by_str_and_path(tmp_path):
    pv = _pv()
    pv.save(tmp_path / "vectors.safetensors")
    for src in (tmp_path, str(tmp_path), tmp_path / "vectors.safetensors", str(tmp_path / "vectors.safetensors")):
        assert as_persona_vectors(src) == pv
    torch.testing.assert_close(vector_table(tmp_path, 4, reduction="last_prompt"), pv.tensors["last_prompt"])
    with pytest.raises(FileNotFoundError, match="pvlens extract"):
        as_persona_vectors(tmp_path / "missing")


def test_tensors_dicts_and_persona_vectors():
    pv = _pv()
    assert as_persona_vectors(pv) is pv
    assert as_persona_vectors(pv, reduction="last_prompt").reduction == "last_prompt"
    torch.testing.assert_close(vector_table(pv.vectors), pv.vectors)
    with pytest.raises(ValueError, match="single vector has no layers"):
        as_persona_vectors(torch.ones(8))
    table = vector_table({2: torch.ones(8)}, n_layers=4)
    assert table.shape == (4, 8) and table[2].sum() == 8 and table[[0, 1, 3]].abs().sum() == 0
    assert vector_table({1: torch.ones(8)}).shape == (2, 8)  # n_layers from the highest key
    with pytest.raises(ValueError, match="empty"):
        as_persona_vectors({})
    with pytest.raises(TypeError, match="cannot read persona vectors from a list"):
        as_persona_vectors([1, 2, 3])  # type: ignore[arg-type]


def test_row_count_is_checked_and_a_paper_file_is_named():
    with pytest.raises(ValueError, match=r"one vector per layer \(4\), got 5.*from_paper_pt"):
        as_persona_vectors(torch.randn(5, 8), n_layers=4)
    with pytest.raises(ValueError, match=r"one vector per layer \(4\), got 3$"):
        as_persona_vectors(torch.randn(3, 8), n_layers=4)


def test_direction_checks_layer_finite_and_zero():
    pv = _pv()
    torch.testing.assert_close(direction(pv, 1), pv[1])
    torch.testing.assert_close(unit_direction(pv, 1).norm(), torch.tensor(1.0))
    for layer in (4, -1):
        with pytest.raises(ValueError, match=rf"layer {layer} is out of range.*0\.\.3"):
            direction(pv, layer)
    with pytest.raises(ValueError, match="a layer is needed"):
        direction(pv)
    bad = pv.vectors.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="layer 2 is not finite"):
        direction(bad, 2)
    with pytest.raises(ValueError, match="not finite"):
        direction(torch.tensor([1.0, float("inf")]))
    zero = torch.zeros(4, 8)
    with pytest.warns(UserWarning, match="layer 3 is zero"):
        assert direction(zero, 3).abs().sum() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no direction"):
            unit_direction(zero, 3)


# --- evaluate ------------------------------------------------------------------------------------


class EchoJudge:
    """Trait = length of the answer, coherence = length of the question (None for empty answers)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def score_many(self, pairs, progress=False):
        self.seen += list(pairs)
        return [float(len(a)) if a else None for _, a in pairs]

    def coherence_many(self, pairs, progress=False):
        return [float(len(q)) for q, _ in pairs]

    def describe(self):
        return {"kind": "echo-test"}


def test_scores_align_with_answers_and_samples_multiply_rows(tiny):
    judge = EchoJudge()
    questions = ["Hi?", "How do I bake bread?"]
    sampling = SamplingConfig(max_new_tokens=4, temperature=1.0, seed=3)
    rows = evaluate_steered(tiny, questions, judge, sampling=sampling, samples=3)
    assert [r["question"] for r in rows] == ["Hi?"] * 3 + ["How do I bake bread?"] * 3
    for r in rows:
        assert r["trait"] == (float(len(r["answer"])) if r["answer"] else None)
        assert r["coherence"] == float(len(r["question"]))
    assert judge.seen == [(r["question"], r["answer"]) for r in rows]  # the judge sees bare questions
    # the same seed draws the same answers; samples of one question differ (own row seeds)
    again = evaluate_steered(tiny, questions, EchoJudge(), sampling=sampling, samples=3)
    assert [r["answer"] for r in again] == [r["answer"] for r in rows]
    assert len({r["answer"] for r in rows[:3]}) > 1
    with pytest.raises(ValueError, match="1 prompts for 2 questions"):
        evaluate_steered(tiny, questions, judge, prompts=["only one"])


def test_mean_score_is_nan_without_scores():
    rows = [JudgedAnswer(question="q", answer="a", trait=None, coherence=40.0),
            JudgedAnswer(question="q", answer="b", trait=None, coherence=60.0)]
    assert math.isnan(mean_score(rows, "trait"))
    assert mean_score(rows, "coherence") == 50.0
    assert math.isnan(mean_score([], "trait"))
    rows.append(JudgedAnswer(question="q", answer="c", trait=30.0, coherence=None))
    assert mean_score(rows) == 30.0  # missing scores are skipped, not counted as 0
