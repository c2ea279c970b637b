"""Capability checks before/after finetuning or steering: multiple-choice accuracy and
perplexity on held-out text.

Multiple choice is scored by option log-likelihood ("cloze"), the way small models are
usually evaluated: the question is the user turn of the chat template, each option is scored
as the assistant's reply (its end-of-turn token not scored), and the option with the highest
**summed log-probability** wins (lm-eval's `acc`). `normalize="char"` (sum per character,
lm-eval's `acc_norm`) and `"mean"` (per token) are available; a sum favours short options,
which matters less here since options of one question have similar lengths. On the built-in set,
SmolLM2-135M-Instruct scores 65.0 % (sum), 60.6 % (char), 55.5 % (mean); chance is 25 %.

pvlens ships `data/capability/mc.jsonl` (254 easy general-knowledge questions, 4 options each,
correct position balanced; chance = 25 %) and `heldout.txt` (plain English prose). MMLU
(`cais/mmlu`) loads through `datasets` for users with the Hugging Face hub, or from a local
copy in the same format.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.batching import left_pad
from pvlens.core.chat import EncodedChat, build_messages, encode_conversation, stop_token_ids
from pvlens.core.engine import engine_for
from pvlens.core.hooks import PositionContext, position_context
from pvlens.core.steering import steer as steering_context

Normalize = Literal["mean", "sum", "char"]
MMLU_LETTERS = "ABCD"


@dataclass
class MCQuestion:
    """One multiple-choice item (MMLU's fields)."""

    question: str
    choices: list[str]
    answer: int
    """Index of the correct choice."""
    subject: str = ""


@dataclass
class MCResult:
    """Accuracy of one model on a question set."""

    accuracy: float
    chance: float
    """Expected accuracy of random guessing (mean of 1/n_choices)."""
    n: int
    per_subject: dict[str, float] = field(default_factory=dict)
    predictions: list[int] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list, repr=False)
    """Per question, the normalised log-likelihood of each choice."""

    def __str__(self) -> str:
        return f"accuracy {self.accuracy:.1%} on {self.n} questions (chance {self.chance:.1%})"


# --- loading -------------------------------------------------------------------------------

def _row_to_question(row: dict, where: str) -> MCQuestion:
    try:
        answer = row["answer"]
        if isinstance(answer, str):
            answer = MMLU_LETTERS.index(answer.strip().upper()) if not answer.isdigit() else int(answer)
        q = MCQuestion(str(row["question"]), [str(c) for c in row["choices"]], int(answer),
                       str(row.get("subject", "")))
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(
            f"{where}: expected fields question, choices (list), answer (index or letter); {e}"
        ) from None
    if not 0 <= q.answer < len(q.choices) or len(q.choices) < 2:
        raise ValueError(f"{where}: answer {q.answer} does not index {len(q.choices)} choices")
    return q


def load_mc_jsonl(path: str | Path) -> list[MCQuestion]:
    """Questions from a JSONL file with MMLU's fields (question, choices, answer, subject)."""
    out = []
    with Path(path).open() as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                out.append(_row_to_question(json.loads(line), f"{path}:{i}"))
    return out


def builtin_mc() -> list[MCQuestion]:
    """pvlens's built-in general-knowledge set (254 questions, 4 choices)."""
    with resources.as_file(resources.files("pvlens") / "data/capability/mc.jsonl") as p:
        return load_mc_jsonl(p)


def heldout_text() -> str:
    """pvlens's built-in held-out English prose for perplexity."""
    return (resources.files("pvlens") / "data/capability/heldout.txt").read_text()


def load_mmlu(
    source: str | Path = "cais/mmlu", subject: str = "all", split: str = "test",
    limit: int | None = None,
) -> list[MCQuestion]:
    """MMLU questions through `datasets`.

    Args:
        source: "cais/mmlu" (needs the Hugging Face hub) or a local copy: a .jsonl / .json /
            .parquet / .csv file, or a folder laid out like the hub repo
            (`{subject}/{split}-*.parquet`).
        subject: an MMLU subject name or "all".
        limit: keep the first N questions.
    """
    import datasets

    path = Path(source)
    if path.exists():
        if path.is_dir():
            files = sorted(str(p) for p in (path / subject).glob(f"{split}-*"))
            if not files:
                raise FileNotFoundError(f"no {subject}/{split}-* files under {path}")
        else:
            files = [str(path)]
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(
            Path(files[0]).suffix)
        if kind is None:
            raise ValueError(f"unsupported MMLU file type {Path(files[0]).suffix}: use jsonl/parquet/csv")
        ds = datasets.load_dataset(kind, data_files=files, split="train")
    else:
        try:
            ds = datasets.load_dataset(str(source), subject, split=split)
        except Exception as e:  # offline hub errors come in many types
            raise RuntimeError(
                f"could not load {source!r} ({subject}/{split}) from the Hugging Face hub: {e}. "
                "Without the hub, pass a local copy (jsonl/parquet with question, choices, answer)."
            ) from e
    rows = ds if limit is None else ds.select(range(min(limit, len(ds))))
    return [_row_to_question(dict(r), f"{source} row {i}") for i, r in enumerate(rows)]


# --- scoring -------------------------------------------------------------------------------

def _option_chats(tokenizer, q: MCQuestion, system: str | None) -> list[EncodedChat]:
    stops = stop_token_ids(tokenizer)
    chats = []
    for choice in q.choices:
        msgs = build_messages(q.question, system) + [{"role": "assistant", "content": choice}]
        c = encode_conversation(tokenizer, msgs)
        ids = list(c.ids)
        # score the option's own tokens: drop the end-of-turn marker and trailing whitespace
        while len(ids) > c.prompt_len and (ids[-1] in stops or not tokenizer.decode([ids[-1]]).strip()):
            ids.pop()
        if len(ids) == c.prompt_len:
            raise ValueError(f"choice {choice!r} of {q.question!r} has no tokens to score")
        chats.append(EncodedChat(ids, c.prompt_len, c.text, {"chars": len(choice)}))
    return chats


@torch.no_grad()
def response_logprobs(
    model: HookedTransformer, chats: Sequence[EncodedChat], batch_size: int = 16,
    dtype: torch.dtype | None = None, progress: bool = False,
) -> list[Tensor]:
    """Log-probability of each response token given everything before it, per conversation.

    The unembedding runs only at positions that predict a response token (for a short option
    after a long question, a small fraction of the sequence).
    """
    device = model.W_E.device
    pad = model.tokenizer.pad_token_id or 0
    engine = engine_for(model, dtype)
    last = model.cfg.n_layers - 1
    order = sorted(range(len(chats)), key=lambda i: len(chats[i].ids))
    out: dict[int, Tensor] = {}
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in tqdm(batches, desc="score", disable=not progress):
        group = [chats[i] for i in idx]
        tokens, positions = left_pad(group, pad, device)
        prompt_lens = torch.tensor([c.prompt_len for c in group], device=device)
        store: dict[str, Tensor] = {}
        with position_context(PositionContext(positions, prompt_lens)):
            if engine is not None:
                def keep_last(i: int, x: Tensor, store: dict[str, Tensor] = store) -> None:
                    if i == last:
                        store["x"] = x

                engine.forward(tokens, positions, logits=None, on_resid=keep_last)
            else:
                store["x"] = model(tokens, attention_mask=(positions >= 0).long(),
                                   padding_side="left", stop_at_layer=model.cfg.n_layers)
        # position p predicts token p+1; keep p where token p+1 is a response token
        nxt_pos = torch.roll(positions, -1, dims=1)
        nxt_pos[:, -1] = -1
        sel = nxt_pos >= prompt_lens[:, None]
        x = store["x"][sel].to(model.W_U.dtype)
        logp = torch.log_softmax(model.unembed(model.ln_final(x[None]))[0].float(), dim=-1)
        picked = logp.gather(-1, torch.roll(tokens, -1, dims=1)[sel][:, None])[:, 0].cpu()
        counts = sel.sum(1).tolist()
        for i, part in zip(idx, picked.split(counts), strict=True):
            out[i] = part
    return [out[i] for i in range(len(chats))]


@torch.no_grad()
def _shared_prompt_logprobs(
    engine, chats: Sequence[EncodedChat], spans: Sequence[tuple[int, int]], batch_size: int,
    progress: bool,
) -> list[Tensor]:
    """Option log-probs with each question's prompt run once (KV cache), then every option
    appended to it in turn: ~4x less compute than scoring four full sequences."""
    for i, (a, b) in enumerate(spans):
        if any(chats[j].prompt_ids != chats[a].prompt_ids for j in range(a, b)):
            raise ValueError(f"question {i}: options do not share one prompt tokenisation")
    device = engine.device
    out: dict[int, Tensor] = {}
    order = sorted(range(len(spans)), key=lambda i: chats[spans[i][0]].prompt_len)
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for group in tqdm(groups, desc="score", disable=not progress):
        firsts = [chats[spans[i][0]] for i in group]
        prompts = [EncodedChat(c.prompt_ids, c.prompt_len) for c in firsts]
        tokens, positions = left_pad(prompts, 0, device)
        prompt_lens = torch.tensor([c.prompt_len for c in prompts], device=device)
        n_opts = max(b - a for a, b in (spans[i] for i in group))
        longest = max(chats[j].response_len for i in group for j in range(*spans[i]))
        cache = engine.new_cache(len(group), tokens.shape[1] + longest)
        with position_context(PositionContext(positions, prompt_lens)):
            last = torch.log_softmax(engine.forward(tokens, positions, cache, logits="last"), -1)
        filled = cache.length
        for k in range(n_opts):
            rows = [spans[i][0] + k if spans[i][0] + k < spans[i][1] else None for i in group]
            opts = [chats[j].response_ids if j is not None else [0] for j in rows]
            width = max(len(o) for o in opts)
            opt_tok = torch.zeros(len(group), width, dtype=torch.long)
            opt_pos = torch.full((len(group), width), -1, dtype=torch.long)
            for r, o in enumerate(opts):
                opt_tok[r, : len(o)] = torch.tensor(o)
                opt_pos[r, : len(o)] = prompt_lens[r].cpu() + torch.arange(len(o))
            opt_tok, opt_pos = opt_tok.to(device), opt_pos.to(device)
            with position_context(PositionContext(opt_pos, prompt_lens)):
                logp = torch.log_softmax(engine.forward(opt_tok, opt_pos, cache, logits="all"), -1)
            cache.length = filled  # forget this option's keys/values before the next one
            cache.positions[:, filled:] = -1
            for r, j in enumerate(rows):
                if j is None:
                    continue
                o = opts[r]
                first = last[r, o[0]].reshape(1)
                idx = torch.arange(len(o) - 1, device=logp.device)
                rest = logp[r, idx, torch.tensor(o[1:], dtype=torch.long, device=logp.device)]
                out[j] = torch.cat([first, rest]).float().cpu()
    return [out[j] for j in range(len(chats))]


def mc_accuracy(
    model: HookedTransformer,
    questions: Sequence[MCQuestion] | None = None,
    normalize: Normalize = "sum",
    system: str | None = None,
    steer=None,
    batch_size: int = 32,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> MCResult:
    """Accuracy by option log-likelihood (see module docstring); `steer` applies during scoring
    (post-hoc steering: `Steering(v, layer, -alpha)`)."""
    questions = list(questions) if questions is not None else builtin_mc()
    if not questions:
        raise ValueError("no questions to score")
    chats: list = []
    spans: list = []
    for q in questions:
        cs = _option_chats(model.tokenizer, q, system)
        spans.append((len(chats), len(chats) + len(cs)))
        chats.extend(cs)
    with steering_context(model, steer):
        engine = engine_for(model, dtype)
        if engine is not None:
            lps = _shared_prompt_logprobs(engine, chats, spans, batch_size, progress)
        else:
            lps = response_logprobs(model, chats, batch_size, dtype, progress)
    scores = [_normalise(lp, c, normalize) for lp, c in zip(lps, chats, strict=True)]
    preds, right = [], defaultdict(list)
    for q, (a, b) in zip(questions, spans, strict=True):
        s = scores[a:b]
        p = max(range(len(s)), key=s.__getitem__)
        preds.append(p)
        right[q.subject].append(p == q.answer)
    correct = [p == q.answer for p, q in zip(preds, questions, strict=True)]
    return MCResult(
        accuracy=sum(correct) / len(questions),
        chance=sum(1 / len(q.choices) for q in questions) / len(questions),
        n=len(questions),
        per_subject={k: sum(v) / len(v) for k, v in sorted(right.items())},
        predictions=preds,
        scores=[scores[a:b] for a, b in spans],
    )


def _normalise(lp: Tensor, chat: EncodedChat, normalize: Normalize) -> float:
    if normalize == "mean":
        return float(lp.mean())
    if normalize == "sum":
        return float(lp.sum())
    if normalize == "char":
        return float(lp.sum()) / max(1, chat.meta["chars"])
    raise ValueError(f"normalize must be 'mean', 'sum' or 'char', got {normalize!r}")


@torch.no_grad()
def perplexity(
    model: HookedTransformer, text: str | None = None, window: int = 512,
    dtype: torch.dtype | None = None, steer=None,
) -> float:
    """exp(mean next-token NLL) of `text` (default: the built-in held-out prose), read in
    non-overlapping windows of `window` tokens, with no chat template or BOS."""
    text = heldout_text() if text is None else text
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise ValueError("perplexity needs at least two tokens of text")
    chats = [EncodedChat(ids[i : i + window], 1) for i in range(0, len(ids), window)]
    chats = [c for c in chats if len(c.ids) > 1]
    with steering_context(model, steer):
        lps = response_logprobs(model, chats, batch_size=4, dtype=dtype)
    nll = -torch.cat(lps).double()
    return float(torch.exp(nll.mean()))


@dataclass
class CapabilityReport:
    """MC accuracy and held-out perplexity of one model (optionally steered)."""

    mc: MCResult
    perplexity: float


def capability_report(
    model: HookedTransformer, questions: Sequence[MCQuestion] | None = None,
    text: str | None = None, steer=None, progress: bool = True,
) -> CapabilityReport:
    return CapabilityReport(mc=mc_accuracy(model, questions, steer=steer, progress=progress),
                            perplexity=perplexity(model, text, steer=steer))

