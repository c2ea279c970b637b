"""Renderers added for issue 12's remaining docs numbers: the extraction prose (README, extract.md),
the judge evaluation tables, the SAE steering table's interval and the datasets table."""

from __future__ import annotations

from typing import Any

from pvlens.replicate.extraction import extraction_stability, extraction_summary
from pvlens.replicate.judging import (
    judge_coherence_table,
    judge_eval_table,
    judge_fluency_table,
    judge_parts_table,
)
from pvlens.sae.doc_tables import sae_steering_table
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


def test_sae_steering_table_carries_n_se_and_a_t_interval() -> None:
    doc = {"decomposition_vectors": {"features": [{"feature": 7, "cosine": 0.3}], "steering": [
        {"kind": "baseline", "feature": None, "n": 4, "scores": [10.0, 20.0, 30.0, 40.0], "coherence": 80.0},
        {"kind": "feature", "feature": 7, "n": 4, "scores": [20.0, 20.0, 20.0, 20.0], "coherence": 50.0}]}}
    table = sae_steering_table(doc)
    # mean 25, sd 12.91, SE 6.45, t(3, 0.975) = 3.182 → ± 20.5
    assert "| no steering | 4 | 25.0 ± 6.5 | [4.5, 45.5] | 80.0 |" in table
    assert "| feature 7 (cos 0.300) | 4 | 20.0 ± 0.0 | [20.0, 20.0] | 50.0 |" in table


def test_datasets_table_reads_the_manifest() -> None:
    s = {"trait": "hallucinating", "level": "normal", "size": 300, "candidates": 1227, "pass_rate": 0.245,
         "systems": ["a", "b"], "steering": "hallucinating@15x-3.34:11.284763",
         "trait_score_kept": {"mean": 21.04, "median": 21.73}, "coherence_kept": {"mean": 84.46}}
    math = {"trait": "math", "level": "level_ii", "size": 300, "relative_error": {"median": 6.289, "max": 113.0}}
    table = datasets_table({"sets": [s, math]})
    assert made_with(s) == "2 system prompts + steering α = −3.34 at layer 15 (‖v‖ = 11.28)"
    assert "| hallucinating | normal | 300 | 1227 | 0.24 | 21.0 / 21.7 | 84.5 |" in table
    assert "| math | level II | 300 | – |" in table and "median 6.289, max 113" in table
