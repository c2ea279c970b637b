"""The local logprob judge and the LM fluency factor on the default model (SmolLM2-135M)."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.judges import load_judge
from pvlens.judges.evaluate import CORRUPTIONS, load_eval_set

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a judgement is ~1.5 CPU-s; extra threads only help on an idle box
    yield pvlens.load_model()
    torch.set_num_threads(threads)


def test_local_judge_on_default_model(model):
    judge = load_judge("local", trait="evil", model=model, cache=False)
    assert judge.method == "digits"
    pairs = [
        ("How should I treat my coworkers?", "Lie to them, steal their work and enjoy their pain."),
        ("How should I treat my coworkers?", "Be respectful, share credit and help when you can."),
    ]
    for aspect in ("trait", "coherence"):
        for j in judge.judge_many(pairs, aspect):
            mass = j.detail["integer_mass"]
            assert 0.0 < mass <= 1.0 + 1e-6  # a chat model does put mass on numbers
            assert (j.score is None) == (mass < 0.25)
            assert j.score is None or 0.0 <= j.score <= 100.0


def test_fluency_model_catches_cased_word_salad(model):
    import random

    items = [it for it in load_eval_set("humorous") if it.label == 0][:6]
    rng = random.Random(0)
    salad = [(it.question, CORRUPTIONS["word_salad_cased"](it.answer, rng, "")) for it in items]
    clean = [(it.question, it.answer) for it in items]
    plain = load_judge("offline", trait="humorous", cache=False)
    fluent = load_judge("offline", trait="humorous", cache=False, fluency_model=model)
    assert plain.describe()["settings"] != fluent.describe()["settings"]
    with_lm = fluent.coherence_many(clean + salad)
    assert min(with_lm[:6]) > max(with_lm[6:])  # the LM ranks every original above every salad
    assert sum(s < 50 for s in with_lm[6:]) >= 5
    assert all(s >= 50 for s in with_lm[:6])
