"""Checks for chapter 3 (extraction)."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import Tensor

from pvlens.course.checks.common import call, close, passed, require


def _rollouts(seed: int = 0) -> list:
    """Judged rollouts with every case: kept, incoherent, wrong side, no score, half pairs."""
    from pvlens.vectors.rollouts import Rollout

    rng = random.Random(seed)
    out = []
    for inst in range(2):
        for q in range(4):
            for s in range(3):
                for pol in ("pos", "neg"):
                    if (inst, q, s, pol) == (1, 3, 2, "neg"):
                        continue  # a pair with no neg half
                    trait = None if rng.random() < 0.08 else rng.choice([10.0, 40.0, 50.0, 55.0, 90.0])
                    coh = None if trait is None else rng.choice([20.0, 49.9, 50.0, 80.0, 95.0])
                    out.append(Rollout(pol, inst, q, s, f"q{q}", "sys", "prompt", "reply", trait, coh))
    return out


def check_keep_mask(student_fn: Callable[..., list[bool]]) -> None:
    """student_fn(rollouts, trait_threshold, coherence_threshold, pairing) → kept flag per rollout."""
    from pvlens.vectors.extract import ExtractConfig, filter_rollouts

    for pairing in ("sample", "pair"):
        for thresholds in ((50.0, 50.0), (35.0, 60.0)):
            rollouts = _rollouts(len(pairing))
            cfg = ExtractConfig(trait_threshold=thresholds[0], coherence_threshold=thresholds[1], pairing=pairing)
            filter_rollouts(rollouts, cfg)
            want = [bool(r.kept) for r in rollouts]
            got = call(student_fn, rollouts, thresholds[0], thresholds[1], pairing, name="keep_mask")
            require(isinstance(got, list) and len(got) == len(want), "keep_mask", "return one bool per rollout")
            bad = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if bool(a) != b]
            if bad:
                r = rollouts[bad[0]]
                raise AssertionError(
                    f"keep_mask: pairing={pairing!r}, thresholds={thresholds}: {len(bad)} wrong flags; first: "
                    f"{r.polarity} (instruction {r.instruction_index}, question {r.question_index}, sample "
                    f"{r.sample_index}) trait={r.trait_score} coherence={r.coherence}: expected {want[bad[0]]}. "
                    "pos needs trait ≥ threshold, neg trait < threshold, both coherence ≥ threshold, no None; "
                    "'pair' keeps a sample only if its partner (same instruction, question, sample) also passes")
    passed("keep_mask")


def check_per_layer_diff_of_means(student_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """student_fn(pos [n, layers, d], neg [m, layers, d]) → [layers, d] difference of means."""
    from pvlens.vectors.extract import difference_of_means

    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(7, 3, 8, generator=g) + 1, torch.randn(5, 3, 8, generator=g)
    want = difference_of_means({"r": pos}, {"r": neg})["r"]
    close(call(student_fn, pos, neg, name="per_layer_diff_of_means"), want, "per_layer_diff_of_means",
          "average over the samples (dim 0) only, keep the layer axis")
    passed("per_layer_diff_of_means")


def check_split_half_cosine(student_fn: Callable[..., Tensor]) -> None:
    """student_fn(pos, neg, pos_groups, neg_groups, first) → per-layer cosine between the vector
    from the questions in `first` and the vector from the others."""
    from pvlens.vectors.extract import split_half_cosine

    g = torch.Generator().manual_seed(1)
    pos, neg = torch.randn(12, 3, 8, generator=g) + 0.5, torch.randn(10, 3, 8, generator=g)
    pg, ng = [i % 4 for i in range(12)], [i % 4 for i in range(10)]
    groups = sorted(set(pg) | set(ng))
    random.Random(0).shuffle(groups)
    first = set(groups[: len(groups) // 2])
    got = call(student_fn, pos, neg, pg, ng, first, name="split_half_cosine")
    close(got, split_half_cosine(pos, neg, pg, ng, seed=0), "split_half_cosine",
          "half A = samples whose question is in `first` (on both sides), half B = the rest; one "
          "difference of means per half; cosine per layer", rtol=1e-4, atol=1e-5)
    passed("split_half_cosine")
