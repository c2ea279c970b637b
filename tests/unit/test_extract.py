"""Extraction pipeline on the tiny random model with a deterministic test judge."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from pydantic import ValidationError

import pvlens
from pvlens.core.activations import collect
from pvlens.vectors import PersonaVectors
from pvlens.vectors.extract import (
    ExtractConfig,
    ExtractionError,
    difference_of_means,
    extract,
    filter_rollouts,
    split_half_cosine,
)
from pvlens.vectors.rollouts import Rollout, read_rollouts


class HashJudge:
    """Deterministic stand-in: pos rows (even positions in plan order) score high, neg low,
    except every fifth answer which gets a hash-based score (so the filter has work to do)."""

    def __init__(self, coherence: float = 80.0):
        self.coh = coherence

    def score_many(self, pairs):
        out = []
        for i, (_, a) in enumerate(pairs):
            h = int(hashlib.md5(a.encode()).hexdigest(), 16) % 100
            out.append(float(h) if i % 5 == 4 else (90.0 if i % 2 == 0 else 10.0))
        return out

    def coherence_many(self, pairs):
        return [self.coh] * len(pairs)

    def describe(self):
        return {"kind": "hash-test"}


@pytest.fixture(scope="module")
def model():
    return pvlens.tiny_model()


def _r(pol, pair, trait, coh=80.0):
    return Rollout(pol, 0, pair, 0, "q", "s", "p", f"a{pol}{pair}", trait, coh)


def test_pair_filter_keeps_only_pairs_where_both_pass():
    rs = [_r("pos", 0, 90), _r("neg", 0, 10),  # both pass
          _r("pos", 1, 90), _r("neg", 1, 70),  # neg on the wrong side
          _r("pos", 2, 90, coh=20), _r("neg", 2, 5),  # pos incoherent
          _r("pos", 3, None), _r("neg", 3, 5)]  # no score
    counts = filter_rollouts(rs, ExtractConfig())
    assert [r.kept for r in rs] == [True, True, False, False, False, False, False, False]
    assert counts["pos_kept"] == 1 and counts["neg_wrong_side"] == 1
    assert counts["pos_incoherent"] == 1 and counts["pos_no_score"] == 1
    counts = filter_rollouts(rs, ExtractConfig(pairing="sample"))
    assert [r.kept for r in rs] == [True, True, True, False, False, True, False, True]


def test_difference_of_means_and_split_half():
    torch.manual_seed(0)
    signal = torch.randn(3, 8)
    pos = signal + 0.05 * torch.randn(40, 3, 8)
    neg = 0.05 * torch.randn(40, 3, 8)
    v = difference_of_means({"r": pos}, {"r": neg})["r"]
    assert torch.nn.functional.cosine_similarity(v, signal, dim=-1).min() > 0.99
    groups = [i % 10 for i in range(40)]
    assert split_half_cosine(pos, neg, groups, groups).min() > 0.95
    noise = split_half_cosine(torch.randn(40, 3, 8), torch.randn(40, 3, 8), groups, groups)
    assert noise.abs().max() < 0.9


def test_extract_writes_files_resumes_and_matches_manual_vector(model, tmp_path, monkeypatch):
    cfg = ExtractConfig.preset("tiny", samples_per_pair=1, pairing="sample", trait_threshold=50)
    judge = HashJudge()
    vecs = extract(model, "evil", tmp_path, judge=judge, cfg=cfg)
    for name in ("rollouts.jsonl", "vectors.safetensors", "means.safetensors", "manifest.json", "trait.json"):
        assert (tmp_path / name).exists(), name
    rollouts = read_rollouts(tmp_path / "rollouts.jsonl")
    assert len(rollouts) == 2 * 4 * 2  # polarity × questions × instructions × 1 sample
    rec = json.loads((tmp_path / "rollouts.jsonl").read_text().splitlines()[0])
    for field in ("polarity", "instruction_index", "question", "system", "prompt_text", "response",
                  "trait_score", "coherence", "kept"):
        assert field in rec
    assert rec["prompt_text"].startswith("<|im_start|>system\nYou are ")
    assert set(vecs.tensors) == {"response_avg", "prompt_avg", "last_prompt"}
    assert vecs.vectors.shape == (model.cfg.n_layers, model.cfg.d_model)

    # the saved vector is the difference of means of the kept samples' activations
    tok = model.tokenizer
    kept = {p: [r.chat(tok) for r in rollouts if r.kept and r.polarity == p] for p in ("pos", "neg")}
    acts = {p: collect(model, c, ("response_avg",), progress=False)["response_avg"] for p, c in kept.items()}
    manual = acts["pos"].double().mean(0) - acts["neg"].double().mean(0)
    torch.testing.assert_close(vecs.vectors, manual.float(), atol=1e-4, rtol=1e-4)
    assert PersonaVectors.load(tmp_path) == vecs

    # a rerun generates nothing new
    def boom(*a, **k):
        raise AssertionError("generate called on resume")

    monkeypatch.setattr("pvlens.vectors.rollouts.bulk_generate", boom)
    again = extract(model, "evil", tmp_path, judge=judge, cfg=cfg)
    assert again == vecs


def test_partial_rollouts_resume_to_the_same_samples(model, tmp_path):
    cfg = ExtractConfig.preset("tiny", samples_per_pair=1, pairing="sample")
    extract(model, "evil", tmp_path / "full", judge=HashJudge(), cfg=cfg)
    full = read_rollouts(tmp_path / "full" / "rollouts.jsonl")
    # simulate a kill: keep the first 5 lines plus half a line
    part = tmp_path / "part"
    part.mkdir()
    (part / "inputs.json").write_text((tmp_path / "full" / "inputs.json").read_text())
    lines = (tmp_path / "full" / "rollouts.jsonl").read_text().splitlines()
    (part / "rollouts.partial.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    extract(model, "evil", part, judge=HashJudge(), cfg=cfg)
    resumed = read_rollouts(part / "rollouts.jsonl")
    assert [r.response for r in resumed] == [r.response for r in full]


def test_too_few_survivors_is_a_clear_error_and_keeps_rollouts(model, tmp_path):
    cfg = ExtractConfig.preset("tiny", samples_per_pair=1, pairing="pair", trait_threshold=50)
    with pytest.raises(ExtractionError, match="too few samples.*lower trait_threshold"):
        extract(model, "evil", tmp_path, judge=HashJudge(coherence=10.0), cfg=cfg)
    assert len(read_rollouts(tmp_path / "rollouts.jsonl")) == 16


def test_unknown_preset_and_bad_trait():
    with pytest.raises(ValueError, match="unknown preset"):
        ExtractConfig.preset("gpu-huge")
    with pytest.raises(ValidationError, match="samples_per_pairs"):
        ExtractConfig.preset("cpu", samples_per_pairs=3)  # a typo is an error, not a default
    with pytest.raises(ValidationError, match="n_questions"):
        ExtractConfig(n_questions=0)
    from pvlens.traits import TraitSpecError, load_trait

    with pytest.raises(TraitSpecError, match="unknown trait"):
        load_trait("not-a-trait")


# --- a rerun into the same folder resumes only with the same inputs (issue 11 item 1) ---------


@pytest.fixture(scope="module")
def finished(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    cfg = ExtractConfig.preset("tiny", samples_per_pair=1, pairing="sample", max_new_tokens=4)
    vecs = extract(model, "evil", out, judge=HashJudge(), cfg=cfg)
    return out, cfg, vecs


class OtherJudge(HashJudge):
    def describe(self):
        return {"kind": "hash-test", "model": "other"}


def _changed_trait():
    from pvlens.traits import load_trait

    spec = load_trait("evil")
    qs = ["What is the best way to settle a dispute?", *spec.extraction_questions[1:]]
    return spec.model_copy(update={"extraction_questions": qs})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"cfg": {"seed": 1}}, "seed"),
        ({"cfg": {"samples_per_pair": 2}}, "config.samples_per_pair"),
        ({"cfg": {"temperature": 0.5}}, "config.temperature"),
        ({"cfg": {"n_questions": 3}}, "config.n_questions"),
        ({"judge": OtherJudge()}, "judge.model"),
        ({"trait": "changed"}, "trait"),
    ],
)
def test_rerun_with_other_inputs_refuses_naming_the_change(model, finished, change, named, monkeypatch):
    from pvlens.io.runs import StaleRunError

    out, cfg, _ = finished
    monkeypatch.setattr("pvlens.vectors.rollouts.bulk_generate", lambda *a, **k: pytest.fail("generated"))
    trait = _changed_trait() if change.get("trait") else "evil"
    new_cfg = cfg.changed(**change.get("cfg", {}))
    with pytest.raises(StaleRunError, match=rf"{named}.*--overwrite"):
        extract(model, trait, out, judge=change.get("judge", HashJudge()), cfg=new_cfg)


def test_rerun_with_other_model_weights_refuses(finished):
    from pvlens.io.runs import StaleRunError

    out, cfg, _ = finished
    other = pvlens.tiny_model(seed=1)
    with pytest.raises(StaleRunError, match="model"):
        extract(other, "evil", out, judge=HashJudge(), cfg=cfg)


def test_filter_settings_and_batch_size_reuse_the_rollouts(model, finished, monkeypatch):
    out, cfg, vecs = finished
    monkeypatch.setattr("pvlens.vectors.rollouts.bulk_generate", lambda *a, **k: pytest.fail("generated"))
    again = extract(model, "evil", out, judge=HashJudge(), cfg=cfg.changed(batch_size=3))
    torch.testing.assert_close(again.vectors, vecs.vectors, atol=1e-5, rtol=1e-5)
    looser = extract(model, "evil", out, judge=HashJudge(), cfg=cfg.changed(trait_threshold=60.0))
    assert looser.metadata["thresholds"]["trait"] == 60.0


def test_overwrite_discards_and_unrecorded_folder_refuses(model, tmp_path):
    from pvlens.io.runs import StaleRunError

    cfg = ExtractConfig.preset("tiny", samples_per_pair=1, pairing="sample", max_new_tokens=4)
    extract(model, "evil", tmp_path, judge=HashJudge(), cfg=cfg)
    new = extract(model, "evil", tmp_path, judge=HashJudge(), cfg=cfg.changed(seed=3), overwrite=True)
    assert new.metadata["seed"] == 3
    assert json.loads((tmp_path / "inputs.json").read_text())["seed"] == 3
    (tmp_path / "inputs.json").unlink()  # a folder written before inputs were recorded
    with pytest.raises(StaleRunError, match="without a record"):
        extract(model, "evil", tmp_path, judge=HashJudge(), cfg=cfg.changed(seed=3))
