"""Contrastive rollouts: every question × instruction × sample, under pos and neg system
prompts, appended to a JSONL file as batches finish so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.chat import EncodedChat, encode_conversation, encode_prompt
from pvlens.core.generation import generate
from pvlens.traits import TraitSpec


@dataclass
class Rollout:
    """One sampled reply and what the judge said of it."""

    polarity: str
    """'pos' (trait-eliciting system prompt) or 'neg' (trait-suppressing)."""
    instruction_index: int
    """Which instruction pair of the trait made the system prompt."""
    question_index: int
    """Index of the question in the trait's extraction questions."""
    sample_index: int
    """Which of the samples for this (question, instruction, polarity)."""
    question: str
    """The user message."""
    system: str
    """The system prompt."""
    prompt_text: str
    """The exact chat-templated prompt string the model saw."""
    response: str
    """The model's reply."""
    trait_score: float | None = None
    """Judge's 0–100 trait score (None: no score)."""
    coherence: float | None = None
    """Judge's 0–100 coherence score."""
    kept: bool | None = None
    """Whether the filter kept this sample for the vector."""

    @property
    def key(self) -> tuple:
        return (self.polarity, self.instruction_index, self.question_index, self.sample_index)

    @property
    def pair_key(self) -> tuple:
        return (self.instruction_index, self.question_index, self.sample_index)

    def chat(self, tokenizer) -> EncodedChat:
        """Prompt + reply as token ids with the boundary (response = the reply's content)."""
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.question},
            {"role": "assistant", "content": self.response},
        ]
        return encode_conversation(tokenizer, messages)


def read_rollouts(path: Path) -> list[Rollout]:
    """Rollouts from a JSONL file; a truncated last line (killed mid-write) is ignored."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(Rollout(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return out


def write_rollouts(path: Path, rollouts: Iterable[Rollout]) -> None:
    """Replace the file atomically."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for r in rollouts:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    tmp.replace(path)


def plan(
    trait: TraitSpec, n_questions: int | None, n_instructions: int | None, samples: int
) -> list[tuple[str, int, int, int]]:
    """(polarity, instruction, question, sample) for every rollout, pos and neg interleaved."""
    qs = range(min(n_questions or len(trait.extraction_questions), len(trait.extraction_questions)))
    ins = range(min(n_instructions or len(trait.instructions), len(trait.instructions)))
    return [
        (pol, i, q, s) for i in ins for q in qs for s in range(samples) for pol in ("pos", "neg")
    ]


def generate_rollouts(
    model: HookedTransformer,
    trait: TraitSpec,
    path: Path,
    todo: Sequence[tuple[str, int, int, int]],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int,
    chunk: int = 64,
) -> list[Rollout]:
    """Generate the planned rollouts missing from `path`, appending each finished chunk."""
    done = {r.key: r for r in read_rollouts(path)}
    missing = [k for k in todo if k not in done]
    index = {k: j for j, k in enumerate(todo)}
    tok = model.tokenizer
    path.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(todo), initial=len(todo) - len(missing), desc="rollouts") as bar:
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            prompts = []
            for pol, i, q, _ in part:
                system = trait.system_prompt(pol, i)
                prompts.append(encode_prompt(tok, trait.extraction_questions[q], system))
            # Each sample's seed depends only on its plan index, so a resumed run draws the
            # same replies as an uninterrupted one.
            result = generate(
                model, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                top_p=top_p, seed=seed, batch_size=batch_size, progress=False,
                row_seeds=[index[k] for k in part],
            ).texts
            with path.open("a") as f:
                for (pol, i, q, s), chat, text in zip(part, prompts, result, strict=True):
                    r = Rollout(pol, i, q, s, trait.extraction_questions[q],
                                trait.system_prompt(pol, i), chat.text, text)
                    done[r.key] = r
                    f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
            bar.update(len(part))
    return [done[k] for k in todo]

