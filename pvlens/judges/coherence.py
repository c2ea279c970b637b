"""Offline coherence: a 0-100 score from measurable properties of the answer.

No LM judge is needed. Six factors, each in [0, 1], multiply (any one failure pulls the score
down, as a human rater would):

    coherence = 100 · language · repetition · relevance · orthography · form · fluency

- language    = clip((c − 1.8) / 0.7) · clip((ok − 0.5) / 0.4), where c is the mean number of
                characters per WordPiece of the alphabetic words (the embedding model's 30k
                English vocabulary: English text gives 2.6–6, random letters 1.2–1.8, so the
                factor is 1 for language and 0 for letter soup) and ok the share of non-space
                characters that are letters, digits or ordinary punctuation.
- repetition  = clip((d − 0.35) / 0.40) with d = min(distinct-3-gram ratio, 1 − share of
                repeated lines); loops and "the the the" drive it to 0.
- relevance   = f + (1 − f) · clip((cos − 0.05) / 0.20), with cos the cosine between the
                question's and the answer's MiniLM embeddings and a floor f that falls from 0.6
                (answers of ≤ 10 words: a curt or dismissive reply is coherent even with no
                topical overlap) to 0.35 (≥ 30 words: a long reply about something else drifts).
- orthography = 1 − 0.6 · s, s = share of sentence stops (. ! ?) followed by a lower-case word
                (abbreviations like "e.g." excluded): well-formed text has s = 0, word salad
                does not.
- form        = 0 for an empty answer; 0.85 when a long answer (> 20 words) stops without final
                punctuation (the rubric's "abrupt ending" ≈ 75); otherwise 1.
- fluency     = 1 unless a scoring LM is given (`fluency_model`): then clip((6.0 − nll) / 1.5)
                from the answer's mean token NLL (nats) under that LM, which catches word salad
                that keeps real words and casing (SmolLM2-135M: coherent answers 2.6–4.5 nats,
                word-shuffled ones 5.4–7.9).

Thresholds were set on the held-out judge-eval answers (all coherent) against synthetic
corruptions of them (`pvlens.judges.evaluate.CORRUPTIONS`); docs/judges.md has the AUROCs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

Tokenize = Callable[[str], list[str]]
"""A tokenizer's `tokenize`: text → word pieces."""

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
TOKEN = re.compile(r"\w+|[^\w\s]")
OK_CHARS = re.compile(r"[\w.,;:!?'\"()\-–—%$€£/&+°*#@\[\]{}=<>~^|…“”‘’]")
FINAL = re.compile(r"[.!?…)\"'”’*`\]:;]\s*$")
STOP_THEN_WORD = re.compile(r"(\S*)[.!?]\s+([A-Za-z])")
ABBREVIATIONS = {
    "e.g",
    "i.e",
    "etc",
    "vs",
    "approx",
    "mr",
    "mrs",
    "ms",
    "dr",
    "st",
    "no",
    "cf",
    "al",
}


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


@dataclass(frozen=True)
class CoherenceFactors:
    """The factors of one answer (each in [0, 1]) and the raw statistics behind them."""

    language: float
    repetition: float
    relevance: float
    orthography: float
    form: float
    fluency: float
    chars_per_piece: float
    char_ok_rate: float
    distinct3: float
    cosine: float
    lower_after_stop: float
    nll: float | None = None

    @property
    def score(self) -> float:
        """The coherence score, 0-100."""
        return 100.0 * (
            self.language
            * self.repetition
            * self.relevance
            * self.orthography
            * self.form
            * self.fluency
        )


def chars_per_piece(text: str, tokenize: Tokenize) -> float:
    """Mean characters per WordPiece over the alphabetic words (0 when there are none)."""
    words = WORD.findall(text)
    if not words:
        return 0.0
    pieces = sum(max(1, len(tokenize(w))) for w in words)
    return sum(len(w) for w in words) / pieces


def char_ok_rate(text: str) -> float:
    """Share of non-space characters that are word characters or ordinary punctuation."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(1 for c in chars if OK_CHARS.match(c)) / len(chars)


def distinct_ngram_ratio(text: str, n: int = 3) -> float:
    """Unique n-grams / n-grams over lower-cased tokens (1.0 for texts shorter than n+1 tokens)."""
    toks = [t.lower() for t in TOKEN.findall(text)]
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    if len(grams) < 2:
        return 1.0
    return len(set(grams)) / len(grams)


def repeated_line_share(text: str) -> float:
    """Share of non-empty lines that repeat an earlier line exactly (after stripping)."""
    lines = [ln.strip().lower() for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return 0.0
    return 1.0 - len(set(lines)) / len(lines)


def lower_after_stop(text: str) -> float:
    """Share of sentence stops followed by a lower-case word (0 when there are none)."""
    hits = [
        nxt.islower()
        for before, nxt in STOP_THEN_WORD.findall(text)
        if (word := before.lower().rstrip(".")) not in ABBREVIATIONS
        and len(word) > 1
        and "." not in word  # "a.m.", "U.S.", "e.g." are abbreviations, not sentence ends
    ]
    return sum(hits) / len(hits) if hits else 0.0


def factors(
    question_vec: np.ndarray,
    answer_vec: np.ndarray,
    answer: str,
    tokenize: Tokenize,
    nll: float | None = None,
) -> CoherenceFactors:
    """All factors for one answer.

    Args:
        question_vec, answer_vec: unit-norm sentence embeddings of the question and the answer.
        answer: the answer text.
        tokenize: the embedding model's WordPiece `tokenize(str) -> list[str]`.
        nll: the answer's mean token NLL under a scoring LM, or None to skip fluency.
    """
    cpp = chars_per_piece(answer, tokenize)
    ok = char_ok_rate(answer)
    language = _clip((cpp - 1.8) / 0.7) * _clip((ok - 0.5) / 0.4)
    d3 = distinct_ngram_ratio(answer, 3)
    repetition = _clip((min(d3, 1.0 - repeated_line_share(answer)) - 0.35) / 0.40)
    n_words = len(WORD.findall(answer))
    cos = float(np.dot(question_vec, answer_vec))
    floor = 0.6 - 0.25 * _clip((n_words - 10) / 20)
    relevance = floor + (1.0 - floor) * _clip((cos - 0.05) / 0.20)
    lower = lower_after_stop(answer)
    orthography = 1.0 - 0.6 * lower
    if not answer.strip():
        form = 0.0
    elif n_words > 20 and not FINAL.search(answer):
        form = 0.85
    else:
        form = 1.0
    fluency = 1.0 if nll is None else _clip((6.0 - nll) / 1.5)
    return CoherenceFactors(
        language=language,
        repetition=repetition,
        relevance=relevance,
        orthography=orthography,
        form=form,
        fluency=fluency,
        chars_per_piece=cpp,
        char_ok_rate=ok,
        distinct3=d3,
        cosine=cos,
        lower_after_stop=lower,
        nll=nll,
    )


def answer_nll(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]
) -> list[float | None]:
    """Mean token NLL (nats) of each answer after its chat-templated question, under `model`.

    `model` is a HookedTransformer (or an HF causal LM); the answer span comes from
    `pvlens.core.chat.encode_conversation`, so template tokens never count. Empty answers give None.
    """
    import torch

    from pvlens.core.chat import encode_conversation

    out: list[float | None] = []
    for question, answer in pairs:
        if not answer.strip():
            out.append(None)
            continue
        chat = encode_conversation(
            tokenizer,
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        )
        ids = torch.tensor([chat.ids])
        with torch.inference_mode():
            logits = _logits(model, ids)[0].float()  # [pos, vocab]
        logp = torch.log_softmax(logits[:-1], dim=-1)
        targets = ids[0, 1:]
        token_nll = -logp.gather(-1, targets[:, None])[:, 0]
        span = token_nll[chat.prompt_len - 1 :]  # predictions of the response tokens
        out.append(float(span.mean()) if len(span) else None)
    return out


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits from a HookedTransformer or an HF causal LM."""
    from transformer_lens import HookedTransformer

    device = next(model.parameters()).device
    if isinstance(model, HookedTransformer):
        return model(ids.to(device), return_type="logits")
    return model(input_ids=ids.to(device)).logits
