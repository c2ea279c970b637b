"""Chapter 8 checks: each reference answer passes its check, a plausible wrong answer fails it."""

from __future__ import annotations

import pytest

from pvlens.course.checks import ch04, ch08
from pvlens.course.checks.ch08 import reference_choose_alpha


def _spec(**change):
    spec = {
        "name": "formal", "description": "Writes formally.",
        "instructions": [{"pos": "Be formal.", "neg": "Be casual."}, {"pos": "Use formal words.", "neg": "Use slang."}],
        "extraction_questions": ["a?", "b?", "c?", "d?"], "evaluation_questions": ["e?", "f?"],
        "rubric": "Score {question} {answer}",
        "exemplars": {"positive": [f"Dear sir {i}." for i in range(5)], "negative": [f"hey {i}" for i in range(5)]},
    }
    return {**spec, **change}


def test_ch08_checks():
    ch08.check_spec(_spec)
    with pytest.raises(AssertionError):
        ch08.check_spec(lambda: _spec(exemplars={"positive": ["x"], "negative": ["y"]}))
    with pytest.raises(AssertionError):
        ch08.check_spec(lambda: _spec(name="evil"))
    ch08.check_choose_alpha(reference_choose_alpha)
    with pytest.raises(AssertionError):  # ignores coherence
        ch08.check_choose_alpha(lambda rows, c: max(rows, key=lambda r: r["trait"])["alpha"])


def test_blank_exercise_fails():
    def blank(*args):
        raise NotImplementedError("Exercise 4.1")
    with pytest.raises(NotImplementedError):
        ch04.check_last_prompt_projection(blank)
