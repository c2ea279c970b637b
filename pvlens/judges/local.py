"""The paper's logprob judge with a local model (HookedTransformer or HF causal LM), offline.

The rubric goes through the model's chat template as the user turn; the judge reads the
next-token distribution after the assistant header.

Two ways to read a 0-100 number from it:

- "single_token" (the paper's): probability of every token that decodes to an integer 0-100.
  Right for tokenizers with one token per number (OpenAI's, Llama 3's up to 999).
- "digits": for tokenizers that split numbers into digits (SmolLM2, Qwen, Gemma), where the
  first token alone only says 0-9. The probability of the number "57" is
  P("5") · P("7" | "5") · P(stop | "57"), summed over the tokenisations the model can produce.
  pvlens expands the digit tree level by level (prefixes whose probability is at least
  `expand_threshold` of the root's; cheaper prefixes are taken to stop), and takes a prefix
  that cannot grow into a larger valid number ("57": "570" > 100) to stop there. That costs
  one forward pass plus one batched pass per extra digit.

"auto" picks "single_token" when every integer 0-100 is one token, else "digits". Either way:
score = probability-weighted mean over the integers, None when their mass < `min_mass` (0.25).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from pvlens.core.fingerprint import model_fingerprint
from pvlens.judges.base import Aspect, Judge, PendingBatch
from pvlens.judges.cache import Judgement
from pvlens.judges.scoring import MIN_INTEGER_MASS, weighted_score
from pvlens.traits import TraitSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pvlens.core.engine import FastEngine, KVCache

NextLogprobs = Callable[[list[list[int]]], Float[Tensor, "batch d_vocab"]]
"""Given equal-length token sequences, log-probabilities of the next token for each."""


@dataclass(frozen=True)
class DigitTokens:
    """Which tokens can start or continue a number, and what digits they carry."""

    first: dict[int, str]
    """Token id -> digits, for tokens that are a number 0-100 possibly with leading whitespace."""
    cont: dict[int, str]
    """Token id -> digits, for tokens made only of 1-3 digits (no whitespace)."""

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> DigitTokens:
        first: dict[int, str] = {}
        cont: dict[int, str] = {}
        for piece, tid in tokenizer.get_vocab().items():
            if not any(c.isdigit() for c in piece):
                continue
            text = str(tokenizer.decode([tid]))
            core = text.strip()
            if not (core.isascii() and core.isdigit() and 1 <= len(core) <= 3):
                continue
            if _valid_prefix(core):
                first[tid] = core
            if text == core:
                cont[tid] = core
        return cls(first, cont)

    def single_token_complete(self) -> bool:
        """True when every integer 0-100 is a single token."""
        return {int(s) for s in self.first.values()} >= set(range(101))


def _valid_prefix(digits: str) -> bool:
    """A digit string that is, or can still become, an integer 0-100 ("0", "7", "10", "100")."""
    if len(digits) > 1 and digits[0] == "0":
        return False
    return int(digits) <= 100


def _can_grow(digits: str) -> bool:
    """Whether appending a digit can still give a valid number ("1"->"10", "10"->"100")."""
    return digits != "0" and int(digits) * 10 <= 100


def integer_distribution_single(logprobs: Tensor, tokens: DigitTokens) -> dict[int, float]:
    """The paper's rule on a full next-token distribution: P(token) per integer it spells."""
    probs = logprobs.float().exp()
    dist: dict[int, float] = {}
    for tid, digits in tokens.first.items():
        dist[int(digits)] = dist.get(int(digits), 0.0) + float(probs[tid])
    return dist


def integer_distribution_digits(
    prompt: list[int],
    next_logprobs: NextLogprobs,
    tokens: DigitTokens,
    expand_threshold: float = 0.01,
    root: Tensor | None = None,
) -> dict[int, float]:
    """P(number) for 0-100 by expanding the digit tree (see the module docstring)."""
    root = next_logprobs([prompt])[0] if root is None else root
    probs = root.float().exp()
    # frontier: (continuation ids, digits so far, probability of reaching this prefix)
    frontier = [([tid], d, float(probs[tid])) for tid, d in tokens.first.items()]
    total_first = sum(p for _, _, p in frontier)
    dist: dict[int, float] = {}
    cont_ids = torch.tensor(list(tokens.cont), dtype=torch.long)
    cont_digits = list(tokens.cont.values())
    while frontier:
        expand = [f for f in frontier if _can_grow(f[1]) and f[2] >= expand_threshold * total_first]
        for ids, digits, p in frontier:
            if not any(ids is e[0] for e in expand):
                dist[int(digits)] = dist.get(int(digits), 0.0) + p
        frontier = []
        # batch prefixes of equal length together (no padding needed)
        by_len: dict[int, list[tuple[list[int], str, float]]] = {}
        for f in expand:
            by_len.setdefault(len(f[0]), []).append(f)
        for group in by_len.values():
            next_lp = next_logprobs([prompt + ids for ids, _, _ in group])
            for (ids, digits, p), lp in zip(group, next_lp, strict=True):
                step = lp.float().exp()
                cont_p = step[cont_ids]
                stop = max(0.0, 1.0 - float(cont_p.sum()))
                dist[int(digits)] = dist.get(int(digits), 0.0) + p * stop
                for tid, d, q in zip(cont_ids.tolist(), cont_digits, cont_p.tolist(), strict=True):
                    new = digits + d
                    if len(new) <= 3 and _valid_prefix(new):
                        frontier.append((ids + [tid], new, p * q))
    return dist


class _CachedPrompt:
    """Runs the prompt once through pvlens's fast engine and reuses its keys/values.

    Digit prefixes are continuations of the same prompt, so each tree level costs a forward
    pass over 1-2 new tokens per prefix instead of over the whole (rubric-long) prompt.
    """

    SLACK = 4
    """Cache slots beyond the prompt (a number is at most 3 tokens)."""

    def __init__(self, engine: FastEngine, prompt: list[int]) -> None:
        self.engine = engine
        self.prompt = prompt
        self.n = len(prompt)
        self.cache: KVCache | None = None

    @torch.inference_mode()
    def start(self) -> tuple[Tensor, NextLogprobs]:
        dev = self.engine.device
        self.cache = self.engine.new_cache(1, self.n + self.SLACK)
        tokens = torch.tensor([self.prompt], device=dev)
        positions = torch.arange(self.n, device=dev)[None]
        root = self.engine.forward(tokens, positions, cache=self.cache, logits="last")
        return torch.log_softmax(root.float(), -1)[0].cpu(), self.next_logprobs

    @torch.inference_mode()
    def next_logprobs(self, seqs: list[list[int]]) -> Tensor:
        if any(seq[: self.n] != self.prompt for seq in seqs):
            raise ValueError("continuations must start with the cached prompt")
        ext = [seq[self.n :] for seq in seqs]
        k, m = len(ext), len(ext[0])
        dev = self.engine.device
        cache = self.engine.new_cache(k, self.n + self.SLACK)
        for layer in range(len(cache.k)):  # broadcast the prompt's keys/values to k rows
            cache.k[layer][:, :, : self.n] = self.cache.k[layer][:, :, : self.n]
            cache.v[layer][:, :, : self.n] = self.cache.v[layer][:, :, : self.n]
        cache.positions[:, : self.n] = self.cache.positions[:, : self.n]
        cache.length = self.n
        tokens = torch.tensor(ext, device=dev)
        positions = torch.arange(self.n, self.n + m, device=dev)[None].expand(k, m)
        logits = self.engine.forward(tokens, positions, cache=cache, logits="last")
        return torch.log_softmax(logits.float(), -1).cpu()


def judge_model_id(model: torch.nn.Module) -> str:
    """The model's name plus `pvlens.core.fingerprint.model_fingerprint` (every weight and
    adapter), so two models — or one model before and after finetuning — never share a cache."""
    name = getattr(getattr(model, "cfg", None), "model_name", None) or getattr(
        getattr(model, "config", None), "name_or_path", type(model).__name__
    )
    return f"{name}@{model_fingerprint(model)}"


class LocalJudge(Judge):
    """Any local causal LM as the paper's logprob judge (runs offline; weak models judge badly)."""

    kind = "local"

    def __init__(
        self,
        trait: str | TraitSpec,
        *,
        model: Any = None,
        tokenizer: Any = None,
        method: str = "auto",
        min_mass: float = MIN_INTEGER_MASS,
        expand_threshold: float = 0.01,
        system: str | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            model: a HookedTransformer or HF causal LM, a name/path for `pvlens.load_model`, or
                None for the default model (SmolLM2-135M-Instruct: expect poor judgements).
            tokenizer: needed for HF models (HookedTransformers carry theirs).
            method: "auto", "single_token" (the paper's) or "digits" (see module docstring).
            min_mass: integer probability mass below which there is no score.
            expand_threshold: digit prefixes below this share of the first-token integer mass
                are not expanded.
            system: optional system prompt before the rubric.
        """
        super().__init__(trait, **kwargs)
        if method not in ("auto", "single_token", "digits"):
            raise ValueError(f"method must be 'auto', 'single_token' or 'digits', got {method!r}")
        if model is None or isinstance(model, str):
            import pvlens

            model = pvlens.load_model(model)
        self.lm = model
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("an HF model needs tokenizer=...; HookedTransformers carry their own")
        self.tokens = DigitTokens.from_tokenizer(self.tokenizer)
        if not self.tokens.first:
            raise ValueError("this tokenizer has no digit tokens; it cannot be a 0-100 judge")
        if method == "auto":
            method = "single_token" if self.tokens.single_token_complete() else "digits"
        self.method = method
        self.min_mass = min_mass
        self.expand_threshold = expand_threshold
        self.system = system

    @property
    def model(self) -> str:
        """Name and weight fingerprint (recomputed when a weight changes; memoised otherwise)."""
        return judge_model_id(self.lm)

    def settings(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "min_mass": self.min_mass,
            "expand_threshold": self.expand_threshold,
            "system": self.system,
        }

    def _prompt_scorer(self, prompt: list[int]) -> tuple[Tensor, NextLogprobs]:
        """Root log-probs after `prompt`, and a next_logprobs for prompt + continuations."""
        from transformer_lens import HookedTransformer

        if isinstance(self.lm, HookedTransformer):
            from pvlens.core.engine import engine_for

            engine = engine_for(self.lm)
            if engine is not None:
                return _CachedPrompt(engine, prompt).start()
        return self._next_logprobs([prompt])[0], self._next_logprobs

    @torch.inference_mode()
    def _next_logprobs(self, seqs: list[list[int]]) -> Tensor:
        """Plain recompute (HF models, or TL models the fast engine does not cover)."""
        from transformer_lens import HookedTransformer

        device = next(self.lm.parameters()).device
        ids = torch.tensor(seqs, dtype=torch.long, device=device)
        if isinstance(self.lm, HookedTransformer):
            resid = self.lm(ids, stop_at_layer=self.lm.cfg.n_layers)  # [batch, pos, d_model]
            logits = self.lm.unembed(self.lm.ln_final(resid[:, -1:]))[:, -1]
        else:
            try:  # only the last position: the full [batch, pos, vocab] tensor is most of the cost
                logits = self.lm(input_ids=ids, logits_to_keep=1).logits[:, -1]
            except TypeError:
                logits = self.lm(input_ids=ids).logits[:, -1]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def prompt_ids(self, aspect: Aspect, question: str, answer: str) -> list[int]:
        """The chat-templated rubric, ending with the assistant header."""
        from pvlens.core.chat import encode_prompt

        return encode_prompt(
            self.tokenizer, self.prompt(aspect, question, answer), system=self.system
        ).ids

    def distribution(self, aspect: Aspect, question: str, answer: str) -> dict[int, float]:
        """P(integer) for 0-100 under the chosen method (mass may be < 1)."""
        ids = self.prompt_ids(aspect, question, answer)
        n_ctx = getattr(getattr(self.lm, "cfg", None), "n_ctx", None)
        if n_ctx is not None and len(ids) + _CachedPrompt.SLACK > n_ctx:
            raise ValueError(
                f"the judge prompt is {len(ids)} tokens but the model's context is {n_ctx}; "
                "load the model with a larger n_ctx (pvlens.load_model(n_ctx=...)) or shorten "
                "the answer"
            )
        root, next_logprobs = self._prompt_scorer(ids)
        if self.method == "single_token":
            return integer_distribution_single(root, self.tokens)
        return integer_distribution_digits(
            ids, next_logprobs, self.tokens, self.expand_threshold, root=root
        )

    def _judge_uncached(self, batch: PendingBatch) -> None:
        bar = batch.progress_bar(self.kind)
        for i, pair in enumerate(batch.pairs):
            dist = self.distribution(batch.aspect, *pair)
            score, mass = weighted_score(dist, self.min_mass)
            top = sorted(dist.items(), key=lambda kv: -kv[1])[:5]
            detail = {"integer_mass": round(mass, 6), "top": [(k, round(v, 6)) for k, v in top]}
            batch.store(i, Judgement(score, detail=detail))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
