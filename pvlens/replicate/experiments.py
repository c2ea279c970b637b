"""The registry: every experiment whose numbers the docs show, in the order `pvlens replicate` runs them.

`minutes` is the full run's expected wall time on one core of the development machine (2-core
AMD EPYC, avx2, shared); `--quick` versions take seconds each.
"""

from __future__ import annotations

from pathlib import Path

from pvlens.io.atomic import read_json_checked
from pvlens.replicate import (
    benchmarks,
    extraction,
    finetuning,
    judging,
    models,
    monitoring,
    screening,
    validation,
)
from pvlens.replicate.registry import Experiment


def _validation_file(path: Path) -> None:
    from pvlens.vectors.validation_run import LayerValidation

    LayerValidation.model_validate(read_json_checked(path))


def _mitigation_file(path: Path) -> None:
    doc = read_json_checked(path)
    if not doc.get("summary") or not all("trait" in row and "n_seeds" in row for row in doc["summary"]):
        raise ValueError(f"{path}: no per-arm summary with trait and n_seeds")


REGISTRY: dict[str, Experiment] = {e.name: e for e in (
    Experiment("validation", validation.run, validation.inputs, 8,
               "shipped vectors on the hand-written and prompt-elicited sets: AUROC, specificity, random null "
               "(`pvlens validate --layers 12,15,18 --elicit`)", ("validation.md",), native="15.json",
               check=_validation_file),
    Experiment("monitoring", monitoring.run, monitoring.inputs, 12,
               "prompt-induced shift: last-prompt projection vs judged evil score, ladder + many-shot, Pearson r",
               ("monitor.md",)),
    Experiment("screening", screening.run, screening.inputs, 20,
               "ΔP of the shipped evil and maths sets per level (evil vector, 20 each), sample-level AUROC, "
               "and the hand-written-set control (40 evil questions)", ("screen.md",)),
    Experiment("screening_traits", screening.run_traits, screening.trait_inputs, 25,
               "ΔP of the sycophantic and hallucinating sets per level with their own vectors, AUROC",
               ("screen.md",)),
    Experiment("models", models.run, models.inputs, 1,
               "zoo: max |Δlogits| TL vs HF and fast engine vs TL per model family", ("models.md",)),
    Experiment("judges", judging.run, judging.inputs, 8,
               "offline judge on the held-out labelled sets (AUROC, its two parts), coherence vs corruptions, "
               "with and without the LM fluency factor (`pvlens judge eval --coherence`)", ("judges.md",)),
    Experiment("extraction", extraction.run, extraction.inputs, 25,
               "extract evil (cpu preset): split-half cosine per layer; layer × α sweep, Spearman ρ", ()),
    Experiment("mitigation_incremental", finetuning.mitigation_incremental, finetuning.mitigation_inputs, 30,
               "all-layer incremental vs single-layer preventative steering vs none, 5 seeds "
               "(`pvlens experiment mitigation ...`)", ("finetune.md",), native="results.json", check=_mitigation_file),
    Experiment("mitigation_arms", finetuning.mitigation_arms, finetuning.mitigation_inputs, 60,
               "every mitigation arm (post-hoc, preventative, listed-layer, incremental, CAFT, L2), 3 seeds",
               ("finetune.md",), native="results.json", check=_mitigation_file),
    Experiment("finetune_shift", finetuning.finetune_shift, finetuning.shift_inputs, 75,
               "finetune on each shipped set, 3 seeds: r(shift, trait) and r(ΔP, trait) per trait", ("finetune.md",)),
    Experiment("benchmarks", benchmarks.run, benchmarks.inputs, 35,
               "benchmarks/bench_*.py RESULT lines (generate, activations, screen, finetune, extract)",
               ("benchmarks.md",)),
    Experiment("ray", benchmarks.ray_run, benchmarks.ray_inputs, 6,
               "benchmarks/bench_ray.py: samples/s with 1 and 2 Ray workers", ("ray.md",)),
)}
