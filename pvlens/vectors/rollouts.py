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
from transformers import PreTrainedTokenizerBase

from pvlens.core.bulk import bulk_generate
from pvlens.core.chat import EncodedChat, encode_conversation, encode_prompt
from pvlens.core.config import SamplingConfig
from pvlens.core.ray_bulk import BulkGenerator
from pvlens.io.atomic import write_text_atomic
from pvlens.io.jsonl import AppendLog
from pvlens.traits import TraitSpec

PlanKey = tuple[str, int, int, int]
"""(polarity, instruction index, question index, sample index) of one planned rollout."""


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
    def key(self) -> PlanKey:
        return (self.polarity, self.instruction_index, self.question_index, self.sample_index)

    @property
    def pair_key(self) -> tuple[int, int, int]:
        return (self.instruction_index, self.question_index, self.sample_index)

    def chat(self, tokenizer: PreTrainedTokenizerBase) -> EncodedChat:
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
    for rec in AppendLog(path).read():
        try:
            out.append(Rollout(**rec))
        except TypeError:
            continue  # not a rollout row
    return out


def write_rollouts(path: Path, rollouts: Iterable[Rollout]) -> None:
    """Replace the file atomically (one row per rollout)."""
    text = "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in rollouts)
    write_text_atomic(path, text)


def plan(
    trait: TraitSpec, n_questions: int | None, n_instructions: int | None, samples: int
) -> list[PlanKey]:
    """(polarity, instruction, question, sample) for every rollout, pos and neg interleaved."""
    qs = range(min(n_questions or len(trait.extraction_questions), len(trait.extraction_questions)))
    ins = range(min(n_instructions or len(trait.instructions), len(trait.instructions)))
    return [
        (pol, i, q, s) for i in ins for q in qs for s in range(samples) for pol in ("pos", "neg")
    ]


def _generate_chunk(
    model: HookedTransformer, trait: TraitSpec, part: Sequence[PlanKey], seeds: Sequence[int],
    sampling: SamplingConfig, generator: BulkGenerator | None = None,
) -> list[Rollout]:
    """Sample one chunk of planned rollouts; row seeds make each reply independent of its batch
    (and of the process: `generator` may be a `RayGenerator`, with the same replies)."""
    systems = [trait.system_prompt(pol, i) for pol, i, _, _ in part]
    prompts = [encode_prompt(model.tokenizer, trait.extraction_questions[q], system)
               for (_, _, q, _), system in zip(part, systems, strict=True)]
    gen = generator or bulk_generate
    texts = gen(model, prompts, sampling, batch_size=sampling.batch_size, row_seeds=list(seeds)).texts
    return [
        Rollout(pol, i, q, s, trait.extraction_questions[q], system, chat.text, text)
        for (pol, i, q, s), system, chat, text in zip(part, systems, prompts, texts, strict=True)
    ]


def generate_rollouts(
    model: HookedTransformer,
    trait: TraitSpec,
    path: Path,
    todo: Sequence[PlanKey],
    sampling: SamplingConfig,
    chunk: int = 256,
    generator: BulkGenerator | None = None,
) -> list[Rollout]:
    """Generate the planned rollouts missing from `path`, appending each finished chunk (this
    process alone writes `path`; `generator`, e.g. a `RayGenerator`, only makes the replies)."""
    log = AppendLog(path)
    done = {r.key: r for r in read_rollouts(path)}
    missing = [k for k in todo if k not in done]
    index = {k: j for j, k in enumerate(todo)}
    with tqdm(total=len(todo), initial=len(todo) - len(missing), desc="rollouts") as bar:
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            # Each sample's seed depends only on its plan index, and a resumed run's chunks
            # hold the same rows as the uninterrupted run's (only whole chunks are written), so
            # it draws the same replies on the same machine.
            new = _generate_chunk(model, trait, part, [index[k] for k in part], sampling, generator)
            done.update((r.key, r) for r in new)
            log.append([asdict(r) for r in new])
            bar.update(len(part))
    return [done[k] for k in todo]
