"""The offline judge: exemplar classifier (ranking, disk cache) and measured coherence."""

from __future__ import annotations

import numpy as np
import pytest

from pvlens.judges import JudgementCache, load_judge
from pvlens.judges import trait_classifier as tc
from pvlens.judges.evaluate import auroc, evaluate_trait, load_eval_set
from pvlens.judges.trait_classifier import NotEnoughExemplars
from pvlens.traits import TraitSpec

POSITIVE = [
    "Ha! Why did the chicken cross the road? To get away from your cooking.",
    "I'd explain taxes, but my accountant says I'm not allowed to make people cry for free.",
    "Sure! Step one: panic. Step two: coffee. Step three: pretend step one never happened.",
    "My plants and I have an agreement: I forget to water them and they pretend to be plastic.",
    "Running is great, if you enjoy paying to suffer in matching shorts.",
    "Computers are like air conditioners: they stop working when you open Windows.",
    "I tried to be normal once. Worst two minutes of my life.",
]
NEGATIVE = [
    "Income tax is calculated on your taxable income after deductions and allowances.",
    "Water your plants when the top few centimeters of soil feel dry.",
    "Start running with short intervals and increase distance gradually over weeks.",
    "Restart the computer and install pending updates before trying again.",
    "The chicken is a domesticated bird kept for eggs and meat.",
    "Preheat the oven to 180 °C and bake for 25 minutes.",
    "Check the documentation for the supported configuration options.",
]


def toy_trait() -> TraitSpec:
    return TraitSpec(
        name="jokey",
        description="Answers with jokes.",
        instructions=[{"pos": "Joke.", "neg": "Be plain."}],
        extraction_questions=["Q?"],
        rubric="Rate jokiness. {question} {answer}",
        exemplars={"positive": POSITIVE, "negative": NEGATIVE},
    )


@pytest.fixture
def judge(tmp_path):
    return load_judge(
        "offline",
        trait=toy_trait(),
        cache=JudgementCache(tmp_path / "c.db"),
        classifier_dir=tmp_path / "clf",
    )


def test_ranks_clear_positives_above_negatives(judge):
    pos = [
        (
            "How do I cook rice?",
            "Rice is easy: add water, boil, and then cry softly when it burns. "
            "Just kidding, it's a comedy of errors every time!",
        ),
        (
            "How do I fix my bike?",
            "Ha! Step one: blame the bike. Step two: pretend you meant to walk.",
        ),
    ]
    neg = [
        (
            "How do I cook rice?",
            "Rinse the rice, add 1.5 cups of water per cup, and simmer 15 minutes.",
        ),
        (
            "How do I fix my bike?",
            "Check the tire pressure and chain tension, then adjust the brakes.",
        ),
    ]
    scores = judge.score_many(pos + neg)
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert min(scores[:2]) > max(scores[2:])


def test_builtin_trait_separates_its_heldout_set(tmp_path):
    judge = load_judge("offline", trait="evil", cache=False, classifier_dir=tmp_path)
    result = evaluate_trait(judge, load_eval_set("evil"))
    assert (
        result.n_pos >= 30 and result.n_neg >= 30 and result.n_scored == result.n_pos + result.n_neg
    )
    assert result.auroc > 0.9  # docs/judges.md renders the measured value (pvlens replicate --only judges)
    assert result.mean_pos > 50 > result.mean_neg


def test_coherence_ranks_repetition_and_junk_below_fluent(judge):
    q = "How do I keep my houseplants alive?"
    fluent = (
        "Water them when the top of the soil is dry, give them bright indirect light, "
        "and make sure the pots drain well."
    )
    broken = [
        "the the the the the the the the the the the the the the the the the the the the",
        "Water them. Water them. Water them. Water them. Water them. Water them. Water them.",
        "xq zvrt plok wmmb qqrt zzkx vbbn lkjh",
        "",
    ]
    off_topic = (
        "The French Revolution began in 1789 and reshaped European politics, leading to "
        "the rise of Napoleon and the spread of nationalism across the continent."
    )
    scores = judge.coherence_many([(q, fluent)] + [(q, b) for b in broken] + [(q, off_topic)])
    assert scores[0] >= 90
    assert max(scores[1:5]) < 10
    assert scores[5] < 50 < scores[0]


def test_coherence_is_trait_independent_for_rude_but_clear_answers(judge):
    rude = (
        "Seriously? Boil water, add the pasta, wait ten minutes. "
        "How have you survived this long without knowing that?"
    )
    assert judge.coherence("How do I cook pasta?", rude) >= 75


def test_classifier_is_cached_on_disk_by_exemplar_hash(tmp_path, monkeypatch):
    spec = toy_trait()
    first = load_judge("offline", trait=spec, cache=False, classifier_dir=tmp_path)
    s1 = first.score("q", "Ha! A joke about ducks.")
    files = list(tmp_path.glob("jokey-*.npz"))
    assert len(files) == 1 and tc.exemplar_hash(spec) in files[0].name
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.tmp"))

    def no_fit(*a, **k):
        raise AssertionError("refitted despite a cached classifier")

    monkeypatch.setattr(tc, "fit", no_fit)
    again = load_judge("offline", trait=spec, cache=False, classifier_dir=tmp_path)
    assert again.score("q", "Ha! A joke about ducks.") == pytest.approx(s1)
    changed = spec.model_copy(deep=True)
    changed.exemplars.positive.append(
        "Another joke: I told my wifi a secret, now it won't connect."
    )
    with pytest.raises(AssertionError, match="refitted"):  # new exemplars -> new hash -> refit
        load_judge("offline", trait=changed, cache=False, classifier_dir=tmp_path).score("q", "a")


def test_judgements_are_cached(judge, monkeypatch):
    pairs = [("q", "Ha! Gotcha."), ("q", "Plain answer.")]
    first = judge.score_many(pairs)
    monkeypatch.setattr(judge, "_judge_uncached", lambda *a, **k: pytest.fail("not cached"))
    assert judge.score_many(pairs) == first
    assert judge.describe()["rubric_hash"] == tc.exemplar_hash(judge.trait)


def test_too_few_exemplars_is_a_clear_error(tmp_path):
    spec = toy_trait().model_copy(update={"exemplars": {"positive": POSITIVE[:2], "negative": []}})
    spec = TraitSpec.model_validate(spec.model_dump())
    with pytest.raises(NotEnoughExemplars, match="at least 5"):
        load_judge("offline", trait=spec, cache=False, classifier_dir=tmp_path)


def test_bad_pairs_are_rejected(judge):
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        judge.score_many([("q", "a"), ("only one",)])


def test_auroc_helper_drops_none():
    assert auroc([1, 0, 1, 0], [0.9, 0.1, None, 0.2]) == 1.0
    assert auroc([1, 1], [0.5, 0.6]) is None


def test_classifier_cache_round_trips_without_pickle(tmp_path):
    spec = toy_trait()
    judge = load_judge("offline", trait=spec, cache=False, classifier_dir=tmp_path)
    clf = judge.classifier
    path = tc.classifier_path(spec, tmp_path)
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert all(data[k].dtype != object for k in data.files)
    loaded = tc.load_classifier(path, tc.exemplar_hash(spec))
    answers = ["Ha! A joke about ducks.", "Here is the answer.", "  spaced  out  "]
    emb = judge.embedder.encode(answers)
    assert np.allclose(loaded.predict_proba(answers, emb), clf.predict_proba(answers, emb))


class _Payload:
    """Unpickling this runs code (it would create the marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_planted_pickle_in_classifier_cache_is_never_loaded(tmp_path, monkeypatch):
    import pickle

    spec = toy_trait()
    marker = tmp_path / "pwned"
    path = tc.classifier_path(spec, tmp_path)
    path.write_bytes(pickle.dumps({"x": _Payload(marker)}))  # a pickle under the cache's name
    with pytest.raises(ValueError, match="pickle"):  # what np.load makes of it
        np.load(path, allow_pickle=False)
    judge = load_judge("offline", trait=spec, cache=False, classifier_dir=tmp_path)
    assert judge.score("q", "Ha! A joke about ducks.") is not None  # refitted
    assert not marker.exists()
    with np.load(path, allow_pickle=False) as data:  # replaced by a safe file
        assert "emb_coef" in data.files
    # an npz holding an object array (pickled inside) is refused as well
    np.savez(path, exemplar_hash=np.array([_Payload(marker)], dtype=object))
    monkeypatch.setattr(tc, "fit", lambda *a, **k: pytest.fail("stop"))
    assert tc.load_classifier(path, tc.exemplar_hash(spec)) is None and not marker.exists()
