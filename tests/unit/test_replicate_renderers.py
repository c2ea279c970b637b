"""Renderers added for issue 12's remaining docs numbers: the extraction prose (README, extract.md),
the judge evaluation tables, the shipped SAEs' tables and the datasets table."""

from __future__ import annotations

from typing import Any

from pvlens.replicate.extraction import extraction_stability, extraction_summary
from pvlens.replicate.judging import (
    judge_coherence_table,
    judge_eval_table,
    judge_fluency_table,
    judge_parts_table,
)
from pvlens.trainsets.datasets_tables import datasets_table, made_with


def _extraction(quick: bool = False) -> dict[str, Any]:
    rows = [{"layer": layer, "alpha": a, "trait": t, "coherence": 80.0, "n": 20}
            for layer, ts in ((12, (20.0, 30.0, 40.0)), (15, (23.6, 40.0, 54.2))) for a, t in zip((0.0, 4.0, 8.0), ts, strict=True)]
    return {"experiment": "extraction", "quick": quick, "seconds": 1500.0, "command": "pvlens replicate --only extraction",
            "results": {"trait": "evil", "split_half_cosine": [0.1] * 12 + [0.68, 0.7, 0.71, 0.77] + [0.8] * 13 + [0.83],
                        "counts": {"pos_total": 600, "pos_kept": 110, "neg_total": 600, "neg_kept": 110},
                        "sweep": {"rows": rows, "spearman": {"12": 1.0, "15": 0.9}, "best_layer": 15, "best_alpha": 8.0}}}


def test_extraction_prose_quotes_the_results_file() -> None:
    text = extraction_summary(_extraction())
    assert "took 25.0 min" in text and "1200 evil rollouts, 110 eliciting / 110 suppressing kept" in text
    assert "split-half cosine 0.77 at layer 15" in text and "2-layer × 3-α sweep" in text
    assert "23.6 → 54.2 over α 0 → 8 (Spearman ρ = 0.90)" in text and "Quick run" not in text
    stab = extraction_stability(_extraction())
    assert "110 of 600 eliciting" in stab and "0.68 at L12, 0.77 at L15, 0.83 at L29" in stab
    assert extraction_summary(_extraction(quick=True)).startswith("(Quick run on the tiny random model")


def _judges() -> dict[str, Any]:
    trait = {"trait": "evil", "kind": "offline", "model": "m", "n_pos": 32, "n_neg": 32, "n_scored": 64, "auroc": 0.98,
             "accuracy_at_50": 0.97, "mean_pos": 68.4, "mean_neg": 23.1, "auroc_embedding": 0.94, "auroc_lexical": 0.96}
    coh = [{"corruption": c, "n": 448, "auroc": 0.5, "share_original_ge50": 1.0, "share_corrupted_lt50": 0.0}
           for c in ("word_salad_cased", "truncated_half")]
    better = [{**c, "auroc": 1.0, "share_corrupted_lt50": 0.98} for c in coh]
    return {"results": {"traits": [trait, {**trait, "trait": "humorous", "auroc": 0.92, "auroc_embedding": 0.88}],
                        "coherence": coh, "fluency": {"n": 56, "every": 8, "without": coh, "with": better}}}


def test_judge_tables() -> None:
    doc = _judges()
    assert "| evil | 0.980 | 0.97 | 68.4 | 23.1 | 32/32 | 64/64 |" in judge_eval_table(doc)
    assert "| **mean** | **0.950** | **0.97** |" in judge_eval_table(doc)
    assert "| **mean** | **0.910** | **0.960** | **0.950** |" in judge_parts_table(doc)
    assert "| truncated_half (mild) | 448 | 0.500 | 1.00 | 0.00 |" in judge_coherence_table(doc)
    assert "| word_salad_cased | 448 | 0.500 | 1.000 | 0.00 / 0.98 | 1.00 / 1.00 |" in judge_fluency_table(doc)


def _sae_result(layer: int, fvu: float, dead: int) -> dict[str, Any]:
    null = {"max": {"mean": 0.15, "p50": 0.15, "p95": 0.17, "p99": 0.18},
            "by_rank": {"95": [0.17, 0.16], "99": [0.18, 0.17]}}
    feats = [{"feature": 7, "cosine": 0.40, "promoted": [["a", 1.0]], "contexts": [{"text": "x [[y]] z"}],
              "stats": {"response_fraction": 0.62, "frequency": 0.012, "role_fractions": {"system": 0.2, "user": 0.1, "template": 0.08}}},
             {"feature": 9, "cosine": 0.16, "promoted": [], "contexts": [], "stats": {}}]
    steering = {"random_p95": 30.0, "n_random": 2, "conditions": [
        {"kind": "baseline", "feature": None, "mean": 20.0, "ci95": [18.0, 22.0], "n": 40},
        {"kind": "persona_vector", "feature": None, "mean": 50.0, "ci95": [45.0, 55.0], "n": 40,
         "diff_vs_baseline": {"mean": 30.0, "ci95": [25.0, 35.0]}},
        {"kind": "feature", "feature": 7, "mean": 35.0, "ci95": [31.0, 39.0], "n": 40,
         "diff_vs_baseline": {"mean": 15.0, "ci95": [11.0, 19.0]}, "random_percentile": 100.0, "beats_random_p95": True},
        {"kind": "random_feature", "feature": 3, "mean": 18.0, "ci95": [15.0, 21.0], "n": 40},
        {"kind": "random_feature", "feature": 4, "mean": 31.0, "ci95": [28.0, 34.0], "n": 40}]}
    dec = {"vector_norm": 12.5, "features": feats, "n_above_null_p99": 1,
           "null": {"n_directions": 1000, "d_sae": 2304, "decoder_abs_cosine": null},
           "sparse_reconstruction": [{"k": 1, "omp": 0.4, "top_cosine": 0.4}],
           "sparse_reconstruction_null": [{"k": 1, "mean": 0.15, "p95": 0.17}], "steering_summary": steering}
    ev = {"fvu": fvu, "l0": 64.0, "dead": dead, "dead_fraction": dead / 2304, "d_sae": 2304, "dense": 3,
          "ce_clean": 2.9, "ce_sae": 3.0, "ce_zero": 15.0, "ce_loss_score": 0.99, "n_tokens": 100000, "ce_tokens": 32768}
    return {"sae": f"smollm2-135m-layer{layer}", "eval": ev, "decomposition_evil": dec,
            "train": {"layer": layer, "train_config": {"k": 64}, "train_seconds": 1200.0}}


def test_sae_layers_table_marks_missed_targets() -> None:
    from pvlens.sae.doc_tables import sae_layers_table

    table = sae_layers_table({"sources": [_sae_result(24, 0.21, 200), _sae_result(6, 0.05, 2)]})
    lines = [x for x in table.splitlines() if x.startswith("| smollm2")]
    assert lines[0].startswith("| smollm2-135m-layer6 | 6 |") and "**0.050**" in lines[0] and "✗" not in lines[0]
    assert "0.210 ✗" in lines[1] and "200 (8.7 %) ✗" in lines[1] and "**0.990**" in lines[1]


def test_sae_earlier_table_names_what_differed_and_marks_misses() -> None:
    from pvlens.sae.doc_tables import sae_earlier_table

    first = {**_sae_result(24, 0.159, 100)["eval"], "layer": 24,
             "recipe": {"training_tokens": 3_000_000, "dead_feature_window": 200}}
    threshold = {**_sae_result(15, 0.12, 69)["eval"], "layer": 15, "l0": 65.45}
    lines = sae_earlier_table({"sources": [first, threshold]}).splitlines()[2:]
    assert lines[0].startswith("| 15 | threshold for L0 64") and "65.5 ✗" in lines[0]
    assert lines[1].startswith("| 24 | 3 M tokens, dead window 200 steps | 0.159 ✗ |") and "**64.0**" in lines[1]


def test_sae_null_features_omp_and_steering_tables() -> None:
    from pvlens.sae.doc_tables import (
        sae_feature_steering_table,
        sae_null_features_table,
        sae_omp_table,
    )

    doc = _sae_result(15, 0.1, 5)
    feats = sae_null_features_table(doc)
    assert "99th percentile **0.180**. 1 of the top 2 features exceed it." in feats
    assert "| 1 | 7 | **0.400** | 0.180 | 62 % | 20 / 10 / 8 | 1.20 % |" in feats
    assert "| 2 | 9 | 0.160 ✗ | 0.170 | 0 % |" in feats
    assert "| 15 | 1 | **0.400** | 0.400 | 0.150 | 0.170 |" in sae_omp_table({"sources": [doc]})
    steer = sae_feature_steering_table(doc)
    assert "| feature 7 (cos 0.400) | 40 | 35.0 [31.0, 39.0] | +15.0 [+11.0, +19.0] | 100 | **yes** |" in steer
    assert "| the evil vector | 40 | 50.0 [45.0, 55.0] | +30.0 [+25.0, +35.0] | – | – |" in steer
    assert "| 2 random features | 40 | mean of means 24.5; range 18.0–31.0 | 95th percentile of their means: 30.0 |" in steer


def test_datasets_table_reads_the_manifest() -> None:
    s = {"trait": "hallucinating", "level": "normal", "size": 300, "candidates": 1227, "pass_rate": 0.245,
         "systems": ["a", "b"], "steering": "hallucinating@15x-3.34:11.284763",
         "trait_score_kept": {"mean": 21.04, "median": 21.73}, "coherence_kept": {"mean": 84.46}}
    math = {"trait": "math", "level": "level_ii", "size": 300, "relative_error": {"median": 6.289, "max": 113.0}}
    table = datasets_table({"sets": [s, math]})
    assert made_with(s) == "2 system prompts + steering α = −3.34 at layer 15 (‖v‖ = 11.28)"
    assert "| hallucinating | normal | 300 | 1227 | 0.24 | 21.0 / 21.7 | 84.5 |" in table
    assert "| math | level II | 300 | – |" in table and "median 6.289, max 113" in table
