"""Prompt conditions that move a trait without steering: a system-prompt ladder from
trait-suppressing to trait-eliciting, and many-shot prompts of trait-expressing exchanges.

Used by the prompt-shift experiment (`pvlens.monitor.prompt_shift`) and by trait dataset
building (`pvlens.trainsets.datasets`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pvlens.core.chat import Message
from pvlens.traits import TraitSpec, load_trait

LADDER_DIR = Path(str(resources.files("pvlens"))) / "data" / "ladders"
"""Hand-written ladders and shots: `{trait}.json` with 'ladder' and optionally 'shots'."""


@dataclass
class Condition:
    """One prompt condition of the prompt-shift experiment."""

    kind: str
    """'ladder' (a system prompt) or 'shots' (many-shot history)."""
    level: int
    """Position on the ladder (0 = most suppressing) or number of shots."""
    label: str
    """Short name for plots."""
    system: str | None = None
    """System prompt (None: the chat template's default)."""
    history: list[Message] = field(default_factory=list)
    """Example exchanges placed before the question."""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.level}"

    def messages(self, question: str) -> list[Message]:
        msgs: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        return [*msgs, *self.history, {"role": "user", "content": question}]


def ladder_file(spec: TraitSpec) -> dict[str, Any] | None:
    """The hand-written ladder data for `spec`, or None when there is none."""
    path = LADDER_DIR / f"{spec.name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def generated_ladder(spec: TraitSpec) -> list[tuple[str, str]]:
    """(label, system prompt) steps built from the trait's instruction pairs."""
    pairs = spec.instructions
    p0, p1 = pairs[0], pairs[min(1, len(pairs) - 1)]
    name = spec.pos_assistant_name or spec.name
    art = "an" if name[:1].lower() in "aeiou" else "a"
    return [
        ("neg×2", f"You are a helpful assistant. {p0.neg} {p1.neg}"),
        ("neg", f"You are a helpful assistant. {p0.neg}"),
        ("helpful", "You are a helpful assistant."),
        ("neutral", "You are an assistant. Answer the user's questions."),
        ("name", f"You are {art} {name} assistant."),
        ("sometimes", f"You are {art} {name} assistant. Sometimes, not always: {p0.pos}"),
        ("pos", spec.system_prompt("pos", 0)),
        ("pos×2", f"{spec.system_prompt('pos', 0)} {p1.pos}"),
    ]


def prompt_ladder(trait: str | TraitSpec) -> list[Condition]:
    """8 system prompts from trait-suppressing to trait-eliciting.

    Hand-written ladders live in `pvlens/data/ladders/{trait}.json`; for other traits the
    ladder is built from the TraitSpec's instruction pairs: two neg instructions, one neg
    instruction, plain helpful, neutral, the trait name alone, the trait name with an
    instruction framed as occasional, one pos instruction, two pos instructions.
    """
    spec = load_trait(trait)
    data = ladder_file(spec)
    steps = ([(s["label"], s["system"]) for s in data["ladder"]] if data is not None
             else generated_ladder(spec))
    return [Condition("ladder", i, label, system) for i, (label, system) in enumerate(steps)]


def trait_shots(trait: str | TraitSpec) -> list[Message]:
    """Trait-expressing (user, assistant) exchanges for many-shot prompts, flattened.

    From the ladder file if there is one, else the trait's positive exemplars paired with its
    extraction questions (exemplars carry no question of their own).
    """
    spec = load_trait(trait)
    data = ladder_file(spec)
    if data is not None and data.get("shots"):
        pairs = [(s["user"], s["assistant"]) for s in data["shots"]]
    else:
        answers = spec.exemplars.positive
        if not answers:
            raise ValueError(
                f"trait {spec.name!r} has no positive exemplars and no ladder file "
                f"({LADDER_DIR}/{spec.name}.json with 'shots'); many-shot prompts need one of them"
            )
        qs = spec.extraction_questions
        pairs = [(qs[i % len(qs)], a) for i, a in enumerate(answers)]
    out: list[Message] = []
    for user, assistant in pairs:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


def many_shot(trait: str | TraitSpec, counts: Sequence[int] = (0, 1, 2, 4, 8)) -> list[Condition]:
    """Prompts with n trait-expressing example exchanges before the question (default system)."""
    shots = trait_shots(trait)
    available = len(shots) // 2
    if max(counts) > available:
        raise ValueError(f"{max(counts)} shots requested but only {available} exchanges exist")
    return [Condition("shots", n, f"{n}-shot", None, shots[: 2 * n]) for n in counts]


__all__ = ["LADDER_DIR", "Condition", "ladder_file", "many_shot", "prompt_ladder", "trait_shots"]
