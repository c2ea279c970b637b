"""Finetuning data: `{"messages": [...]}` JSONL → tokenised conversations → padded batches.

The loss covers the response only: the last message must be the assistant's, and
`pvlens.core.chat.encode_conversation` gives the exact prompt/response boundary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from pvlens.core.chat import EncodedChat, Message, encode_conversation
from pvlens.core.hooks import PositionContext
from pvlens.io import conversations
from pvlens.io.conversations import read_conversations

Conversation = Sequence[Message]


def read_jsonl(path: str | Path) -> list[list[Message]]:
    """Conversations from a `{"messages": [...]}` JSONL file, validated line by line."""
    return read_conversations(path)


def check_messages(messages: Any, where: str = "") -> list[Message]:
    """Validate one conversation: a list of {role, content}, ending with the assistant."""
    return conversations.check_messages(messages, where or "conversation", need_user=False)


def encode_all(tokenizer, conversations: Sequence[Conversation], max_length: int) -> list[EncodedChat]:
    """Tokenise; responses running past `max_length` are cut (a prompt that long is an error)."""
    chats = []
    for i, conv in enumerate(conversations):
        c = encode_conversation(tokenizer, conv)
        if c.prompt_len >= max_length:
            raise ValueError(
                f"conversation {i}: the prompt alone has {c.prompt_len} tokens, max_length is "
                f"{max_length}; raise max_length or shorten the prompt"
            )
        if len(c.ids) > max_length:
            c = EncodedChat(c.ids[:max_length], c.prompt_len, c.text, {**c.meta, "truncated": True})
        if c.response_len == 0:
            raise ValueError(f"conversation {i} has an empty assistant reply")
        c.meta["index"] = i
        chats.append(c)
    return chats


def fingerprint(chats: Sequence[EncodedChat]) -> str:
    """Hash of the token ids and boundaries: a resumed run must see the same data."""
    h = hashlib.sha256()
    for c in chats:
        h.update(json.dumps([c.prompt_len, c.ids]).encode())
    return h.hexdigest()[:16]


def split(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train / held-out split of `n` samples (held-out gets ≥1 when the fraction is > 0)."""
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    n_eval = 0 if eval_fraction == 0 else max(1, round(n * eval_fraction))
    if n - n_eval < 1:
        raise ValueError(f"{n} samples leave nothing to train on with eval_fraction {eval_fraction}")
    return sorted(perm[n_eval:]), sorted(perm[:n_eval])


@dataclass
class Batch:
    """A padded micro-batch with everything the loss and the hooks need."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    positions: Int[Tensor, "batch pos"]
    """Index in the own sequence; -1 on padding."""
    prompt_lens: Int[Tensor, " batch"]
    target_mask: Bool[Tensor, "batch pos"]
    """True at positions whose *next* token is a response token (the loss positions)."""
    rows: list[int]
    """Dataset indices of the rows."""

    @property
    def context(self) -> PositionContext:
        return PositionContext(positions=self.positions, prompt_lens=self.prompt_lens)

    @property
    def n_targets(self) -> int:
        return int(self.target_mask.sum())

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def last_prompt_index(self) -> Int[Tensor, " batch"]:
        """Column of each row's last prompt token."""
        return (self.positions == (self.prompt_lens - 1)[:, None]).long().argmax(-1)

    def response_mask(self) -> Bool[Tensor, "batch pos"]:
        return (self.positions >= self.prompt_lens[:, None]) & (self.positions >= 0)


def collate(
    chats: Sequence[EncodedChat], rows: Sequence[int], pad_id: int,
    side: Literal["right", "left"] = "right",
) -> Batch:
    """Pad to the longest row; masks come from lengths, never from pad ids (the pad token can
    occur inside a conversation, e.g. SmolLM2's `<|im_end|>`; see docs/generation.md)."""
    width = max(len(c.ids) for c in chats)
    n = len(chats)
    tokens = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.full((n, width), -1, dtype=torch.long)
    for i, c in enumerate(chats):
        L = len(c.ids)
        sl = slice(0, L) if side == "right" else slice(width - L, width)
        tokens[i, sl] = torch.tensor(c.ids)
        positions[i, sl] = torch.arange(L)
    prompt_lens = torch.tensor([c.prompt_len for c in chats])
    nxt = torch.full_like(positions, -1)
    nxt[:, :-1] = positions[:, 1:]
    target_mask = (nxt >= prompt_lens[:, None]) & (positions >= 0)
    return Batch(tokens, (positions >= 0).long(), positions, prompt_lens, target_mask, list(rows))


def micro_batches(
    chats: Sequence[EncodedChat], rows: Sequence[int], micro_batch_size: int, max_tokens: int | None,
) -> list[list[int]]:
    """Split one optimizer step's rows into micro-batches of similar length (little padding)."""
    order = sorted(rows, key=lambda r: (len(chats[r].ids), r))
    out: list[list[int]] = []
    cur: list[int] = []
    width = 0
    for r in order:
        w = max(width, len(chats[r].ids))
        too_many = len(cur) >= micro_batch_size or (max_tokens is not None and w * (len(cur) + 1) > max_tokens)
        if cur and too_many:
            out.append(cur)
            cur, w = [], len(chats[r].ids)
        cur.append(r)
        width = w
    if cur:
        out.append(cur)
    return out
