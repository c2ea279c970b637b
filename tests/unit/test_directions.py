"""Direction methods (mean, PCA of differences, logistic probe): math on synthetic activations,
the from-rollouts route and extraction with --method on the tiny model."""

from __future__ import annotations

import hashlib

import pytest
import torch
from pydantic import ValidationError

import pvlens
from pvlens.errors import InputError
from pvlens.vectors import PersonaVectors
from pvlens.vectors.directions import (
    directions,
    logistic_probe,
    mean_difference,
    method_key,
    pca_of_differences,
)
from pvlens.vectors.directions_run import add_directions, pair_rows
from pvlens.vectors.extract import ExtractConfig, extract
from pvlens.vectors.rollouts import Rollout, write_rollouts

cos = torch.nn.functional.cosine_similarity


def _synthetic(n: int = 60, layers: int = 2, d: int = 16, seed: int = 0):
    """pos = neg-like noise + s_i·e (e = first axis, s_i ≈ 2 ± 1.5 varies by pair, so the
    differences vary most along e, which centred PCA needs); a large shared per-pair offset."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, layers, d, generator=g)
    pos = shared + 0.5 * torch.randn(n, layers, d, generator=g)
    neg = shared + 0.5 * torch.randn(n, layers, d, generator=g)
    pos[..., 0] += 2.0 + 1.5 * torch.randn(n, layers, generator=g)
    return pos, neg


def test_each_method_recovers_the_planted_axis_with_the_mean_norm_and_sign():
    pos, neg = _synthetic()
    e = torch.zeros(16)
    e[0] = 1.0
    mean = mean_difference(pos, neg)
    for name, v in directions(pos, neg).items():
        assert v.shape == (2, 16)
        floor = 0.7 if name == "probe" else 0.9  # the unpaired probe also fits per-sample noise
        assert cos(v, e.expand(2, 16), dim=-1).min() > floor, name
        torch.testing.assert_close(v.norm(dim=-1), mean.norm(dim=-1))  # rescaled to the mean's norm
        assert (v * mean).sum(-1).min() > 0  # sign-aligned with the mean difference


def test_pca_uses_pairs_and_differs_from_the_mean_when_the_variance_axis_is_not_the_mean_axis():
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(50, 1, 8, generator=g) * 0.1
    neg = torch.randn(50, 1, 8, generator=g) * 0.1
    pos[:, 0, 0] += 1.0  # constant shift: the mean difference
    pos[:, 0, 1] += torch.linspace(-3, 3, 50)  # varying along axis 1: the top PC of differences
    v = pca_of_differences(pos, neg)[0]
    assert abs(float(v[1])) / float(v.norm()) > 0.95
    assert float(v @ mean_difference(pos, neg)[0]) >= 0
    with pytest.raises(InputError, match="pairs"):
        pca_of_differences(pos[:1], neg[:1])


def test_pca_matches_sklearn_pca_of_differences_as_repeng_computes_it():
    from sklearn.decomposition import PCA

    pos, neg = _synthetic(seed=3)
    ours = pca_of_differences(pos, neg)
    for layer in range(2):
        diff = (pos[:, layer] - neg[:, layer]).double().numpy()
        ref = torch.from_numpy(PCA(n_components=1).fit(diff).components_[0])  # repeng's pca_diff
        assert abs(float(cos(ours[layer].double(), ref, dim=0))) > 0.9999


def test_probe_ignores_a_high_variance_nuisance_the_mean_is_pulled_by():
    g = torch.Generator().manual_seed(2)
    n = 80
    pos = torch.randn(n, 1, 6, generator=g) * 0.3
    neg = torch.randn(n, 1, 6, generator=g) * 0.3
    pos[:, 0, 0] += 1.0
    pos[:, 0, 1] += 5.0 + 10.0 * torch.randn(n, generator=g)  # big mean shift, useless for separation
    v = logistic_probe(pos, neg)[0]
    m = mean_difference(pos, neg)[0]
    assert abs(float(v[0])) > abs(float(v[1]))  # the probe weights the clean separating axis
    assert abs(float(m[1])) > abs(float(m[0]))  # the mean difference is dominated by the nuisance


def test_method_keys_and_unknown_methods():
    assert method_key("response_avg", "mean") == "response_avg"
    assert method_key("response_avg", "pca") == "response_avg:pca"
    with pytest.raises(InputError, match="choose from"):
        method_key("response_avg", "lda")
    with pytest.raises(ValidationError, match="lda"):
        ExtractConfig(methods=("mean", "lda"))


def _rollout(pol: str, q: int, text: str) -> Rollout:
    return Rollout(pol, 0, q, 0, f"question {q}?", "You are an assistant.", "p", text, 80.0, 80.0, True)


def test_pair_rows_align_by_pair_key():
    pos = [_rollout("pos", q, "x") for q in (3, 1, 2)]
    neg = [_rollout("neg", q, "y") for q in (1, 2, 9)]
    ip, ineg = pair_rows(pos, neg)
    assert [pos[i].question_index for i in ip] == [neg[j].question_index for j in ineg] == [1, 2]


def test_add_directions_from_rollouts_and_refuses_foreign_rollouts(tmp_path, monkeypatch):
    model = pvlens.tiny_model()
    rs = [_rollout(p, q, f"{'cruel ' if p == 'pos' else 'kind '}answer number {q} " * 3)
          for q in range(6) for p in ("pos", "neg")]
    write_rollouts(tmp_path / "r.jsonl", rs)
    from pvlens.core.activations import collect

    tok = model.tokenizer
    acts = {p: collect(model, [r.chat(tok) for r in rs if r.polarity == p], ("response_avg",), progress=False)
            for p in ("pos", "neg")}
    vecs = PersonaVectors({"response_avg": mean_difference(acts["pos"]["response_avg"], acts["neg"]["response_avg"])},
                          {"trait": "evil"})
    out = add_directions(model, vecs, tmp_path / "r.jsonl")
    assert set(out.tensors) == {"response_avg", "response_avg:pca", "response_avg:probe"}
    assert out.reduction == "response_avg" and torch.equal(out.vectors, vecs.vectors)
    assert out.metadata["methods"]["n_pairs"] == 6 and out.metadata["methods"]["recomputed_mean_cosine_min"] > 0.999
    out.save(tmp_path / "v.safetensors")
    assert PersonaVectors.load(tmp_path / "v.safetensors", "response_avg:pca") == out.use("response_avg:pca")
    # a saved file is reused only with identical inputs
    from pvlens.vectors import directions_run

    saved = tmp_path / "saved.safetensors"
    first = directions_run.load_or_add_directions(model, vecs, tmp_path / "r.jsonl", saved)
    calls = []
    real = directions_run.add_directions
    monkeypatch.setattr(directions_run, "add_directions", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert directions_run.load_or_add_directions(model, vecs, tmp_path / "r.jsonl", saved) == first
    assert not calls
    directions_run.load_or_add_directions(model, vecs, tmp_path / "r.jsonl", saved, seed=1)
    assert calls == [1]  # another seed: recomputed
    foreign = PersonaVectors({"response_avg": torch.randn_like(vecs.vectors)}, {})
    with pytest.raises(InputError, match="not the ones"):
        add_directions(model, foreign, tmp_path / "r.jsonl")


class _HashJudge:
    """Pos rows (even positions) score high, neg low; coherent."""

    def score_many(self, pairs):
        return [90.0 if i % 2 == 0 else 10.0 for i, _ in enumerate(pairs)]

    def coherence_many(self, pairs):
        return [80.0] * len(pairs)

    def describe(self):
        return {"kind": "hash-test", "h": hashlib.md5(b"x").hexdigest()}


def test_extract_with_methods_saves_them_next_to_the_mean(tmp_path):
    model = pvlens.tiny_model()
    cfg = ExtractConfig.preset("tiny", samples_per_pair=1, pairing="pair", trait_threshold=50,
                               methods=("mean", "pca", "probe"))
    vecs = extract(model, "evil", tmp_path, judge=_HashJudge(), cfg=cfg)
    names = {f"{r}{s}" for r in ("response_avg", "prompt_avg", "last_prompt") for s in ("", ":pca", ":probe")}
    assert set(vecs.tensors) == names and vecs.reduction == "response_avg"
    plain = extract(model, "evil", tmp_path, judge=_HashJudge(), cfg=cfg.model_copy(update={"methods": ("mean",)}))
    torch.testing.assert_close(plain.vectors, vecs.vectors)  # mean stays the default and unchanged
    assert vecs.metadata["methods"]["n_pairs"] == vecs.metadata["counts"]["pos_kept"]


class _LengthJudge:
    """Scores by answer length (deterministic), so steering that changes text changes scores."""

    def __init__(self, trait: str = "evil"):
        self.trait = trait

    def score_many(self, pairs):
        return [float(len(a) % 101) for _, a in pairs]

    def coherence_many(self, pairs):
        return [50.0 + len(set(a.split())) % 50 for _, a in pairs]

    def describe(self):
        return {"kind": "length-test", "trait": self.trait}


def test_compare_directions_and_its_table_on_the_tiny_model():
    from pvlens.vectors.directions_compare import DirectionsConfig, compare_directions
    from pvlens.vectors.directions_tables import directions_table

    model = pvlens.tiny_model()
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(8, model.cfg.n_layers, model.cfg.d_model, generator=g) + 1.0
    neg = torch.randn(8, model.cfg.n_layers, model.cfg.d_model, generator=g)
    from pvlens.vectors.directions import method_tensors

    vecs = PersonaVectors(method_tensors({"response_avg": pos}, {"response_avg": neg}, ["mean", "pca", "probe"]),
                          {"methods": {"n_pairs": 8}})
    cfg = DirectionsConfig(alphas=[0.0, 3.0], n_questions=2, samples=1, max_new_tokens=4, n_null=20, n_bootstrap=20)
    res = compare_directions(model, vecs, "evil", _LengthJudge(), cfg)
    assert set(res["steering"]) == {"mean", "pca", "probe"} and res["layer"] == 1
    base = res["steering"]["mean"]["0"]
    assert base["n"] == 2 and base["trait"]["delta"] == 0.0  # α = 0 is the shared reference
    cell = res["auroc"]["screening"]["cells"]["pca"]
    assert 0.0 <= cell["auroc"] <= 1.0 and cell["ci95"][0] <= cell["auroc"] <= cell["ci95"][1]
    table = directions_table(res)
    assert table.count("\n| ") == 3 and "| probe |" in table and "Δ trait α=3" in table
    # every other method against the mean, paired: same answers → the steering difference is exact
    for m in ("pca", "probe"):
        vs = res["steering"][m]["3"]["trait"]["vs_mean"]
        got, ref = res["steering"][m]["3"]["trait"]["mean"], res["steering"]["mean"]["3"]["trait"]["mean"]
        assert vs["delta"] == pytest.approx(got - ref) and vs["ci95"][0] <= vs["delta"] <= vs["ci95"][1]
        cell = res["auroc"]["monitoring"]["vs_mean"][m]
        assert cell["delta"] == pytest.approx(res["auroc"]["monitoring"]["cells"][m]["auroc"]
                                              - res["auroc"]["monitoring"]["cells"]["mean"]["auroc"])
    assert "vs_mean" not in res["steering"]["mean"]["3"]["trait"]


def _summary_run(trait: str, probe_gain: tuple[float, float, float] | None) -> dict:
    cell = {"auroc": 0.8, "ci95": [0.7, 0.9]}
    steer = {"n": 20, "trait": {"mean": 40.0, "ci95": [30.0, 50.0], "delta": 10.0, "delta_ci95": [2.0, 18.0]}}
    run = {"trait": trait, "n_pairs": 30, "methods": ["mean", "pca", "probe"],
           "auroc": {k: {"cells": {m: cell for m in ("mean", "pca", "probe")}} for k in ("screening", "monitoring")},
           "steering": {m: {"0": steer, "8": {**steer, "trait": dict(steer["trait"])}} for m in ("mean", "pca", "probe")}}
    if probe_gain is not None:
        d, lo, hi = probe_gain
        for key in ("screening", "monitoring"):
            run["auroc"][key]["vs_mean"] = {"pca": {"delta": -0.01, "ci95": [-0.05, 0.03]},
                                            "probe": {"delta": d, "ci95": [lo, hi]}}
    return run


def test_directions_summary_marks_only_paired_differences_that_exclude_zero():
    from pvlens.vectors.directions_tables import methods_summary_table

    table = methods_summary_table({"sources": [_summary_run("evil", (0.07, 0.03, 0.11)),
                                               _summary_run("sycophantic", None)]})
    evil = next(line for line in table.splitlines() if line.startswith("| `evil`"))
    assert "**+0.070 [+0.030, +0.110]**" in evil and "-0.010 [-0.050, +0.030]" in evil
    assert "**-0.010" not in evil
    syco = next(line for line in table.splitlines() if line.startswith("| `sycophantic`"))
    assert syco.endswith("| — | — |")  # an older file without paired differences is shown as not measured
    assert table.count("Δ trait α=8 (n=20)") == 2


def test_compare_directions_sources(tmp_path):
    from pvlens.cli.directions import SHIPPED_EVIL_ROLLOUTS, comparison_sources
    from pvlens.errors import InputError

    assert comparison_sources("evil", None, None) == (SHIPPED_EVIL_ROLLOUTS, "evil")
    with pytest.raises(InputError, match="pvlens extract sycophantic"):
        comparison_sources("sycophantic", None, None)
    run = tmp_path / "run"
    run.mkdir()
    (run / "rollouts.jsonl").write_text("")
    assert comparison_sources("sycophantic", run / "rollouts.jsonl", None) == (run / "rollouts.jsonl", "sycophantic")
    (run / "vectors.safetensors").write_bytes(b"")
    assert comparison_sources("sycophantic", run / "rollouts.jsonl", None) == (run / "rollouts.jsonl", str(run))
    assert comparison_sources("sycophantic", run / "rollouts.jsonl", "x.safetensors")[1] == "x.safetensors"


def test_off_target_rows_and_table_on_the_tiny_model():
    from pvlens.vectors.directions_tables import directions_table
    from pvlens.vectors.off_target import OffTargetConfig, off_target

    model = pvlens.tiny_model()
    vecs = {t: PersonaVectors({"response_avg": torch.randn(model.cfg.n_layers, model.cfg.d_model)}, {})
            for t in ("evil", "sycophantic")}
    cfg = OffTargetConfig(steered=["evil", "sycophantic"], alpha=4.0, questions_per_trait=1, max_new_tokens=4,
                          mc_questions=2, n_bootstrap=20)
    res = off_target(model, cfg, vecs, judge_for=_LengthJudge, judged=["evil", "humorous"])
    assert list(res["rows"]) == ["none", "evil", "sycophantic"] and res["n_answers"] == 2
    none = res["rows"]["none"]
    assert none["judged"]["humorous"]["delta"] == 0.0 and set(none["judged"]) == {"evil", "humorous", "coherence"}
    assert none["capability"]["mc_n"] == 2 and none["capability"]["perplexity"] > 1.0
    table = directions_table(res)
    assert "| none (scores) |" in table and "| evil |" in table and "\n| humorous" not in table


def test_paired_change_refuses_answers_to_different_questions():
    from pvlens.vectors.directions_compare import DirectionsConfig, paired_change

    a = [{"question": "q1", "answer": "x", "trait": 60.0, "coherence": 80.0}]
    b = [{"question": "q2", "answer": "y", "trait": 20.0, "coherence": 80.0}]
    with pytest.raises(ValueError, match="same question"):
        paired_change(a, b, "trait", DirectionsConfig(n_bootstrap=10))
    assert paired_change(a, [{**b[0], "question": "q1"}], "trait", DirectionsConfig(n_bootstrap=10))["delta"] == 40.0
