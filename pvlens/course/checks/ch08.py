"""Checks for chapter 8 (capstone): the hand-written trait spec and the choice of a steering strength."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from pvlens.course.checks.inputs import passed
from pvlens.judges.trait_classifier import MIN_EXEMPLARS
from pvlens.traits.spec import TraitSpec


def check_spec(fn: Callable[[], dict]) -> None:
    """fn() -> a dict that is a valid TraitSpec, usable by the offline judge and big enough to extract from."""
    spec = TraitSpec.model_validate(fn())  # names the broken field if invalid
    problems = []
    if len(spec.instructions) < 2:
        problems.append(f"{len(spec.instructions)} instruction pairs (want ≥ 2; the paper uses 5)")
    if any(p.pos.strip() == p.neg.strip() for p in spec.instructions):
        problems.append("an instruction pair whose pos and neg are the same")
    if len(spec.extraction_questions) < 4 or len(spec.evaluation_questions) < 2:
        problems.append("too few questions (want ≥ 4 extraction and ≥ 2 evaluation; the paper uses 20 + 20)")
    for side in ("positive", "negative"):
        n = len(getattr(spec.exemplars, side))
        if n < MIN_EXEMPLARS:
            problems.append(f"{n} {side} exemplars (the offline judge needs ≥ {MIN_EXEMPLARS})")
    if spec.name in {"evil", "sycophantic", "hallucinating", "optimistic", "humorous", "impolite", "apathetic"}:
        problems.append(f"'{spec.name}' is a built-in trait; the capstone asks for a new one")
    assert not problems, "spec: " + "; ".join(problems)
    passed("spec")


def reference_choose_alpha(rows: Sequence[dict[str, Any]], coherence_min: float) -> float | None:
    """The α with the highest trait score among cells whose coherence ≥ coherence_min (ties: smaller α)."""
    ok = [r for r in rows if r["coherence"] is not None and r["coherence"] >= coherence_min
          and r["trait"] is not None and not math.isnan(r["trait"])]
    if not ok:
        return None
    return min(ok, key=lambda r: (-r["trait"], r["alpha"]))["alpha"]


def check_choose_alpha(fn: Callable) -> None:
    """fn(rows [{alpha, trait, coherence}], coherence_min) -> α or None."""
    cases: list[tuple[list[dict[str, Any]], float]] = [
        ([{"alpha": 0, "trait": 10, "coherence": 90}, {"alpha": 4, "trait": 60, "coherence": 70},
          {"alpha": 8, "trait": 80, "coherence": 30}], 50),
        ([{"alpha": 0, "trait": 10, "coherence": 40}, {"alpha": 4, "trait": 60, "coherence": 20}], 50),
        ([{"alpha": 2, "trait": 50, "coherence": 80}, {"alpha": 1, "trait": 50, "coherence": 80},
          {"alpha": 3, "trait": float("nan"), "coherence": 90}], 50),
    ]
    for rows, cmin in cases:
        want, got = reference_choose_alpha(rows, cmin), fn(rows, cmin)
        assert got == want, (f"choose_alpha: got {got}, expected {want} for {rows} (coherence ≥ {cmin}). "
                             "Skip incoherent cells and cells without a score; prefer the smaller α on ties.")
    passed("choose_alpha")
