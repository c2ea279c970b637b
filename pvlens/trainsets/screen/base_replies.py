"""The base model's own greedy replies to the dataset's prompts, cached on disk.

The key covers everything a reply depends on: the model's full fingerprint (every weight and
LoRA adapter, `pvlens.core.fingerprint.model_fingerprint`), the length cap and the prompt. A
finetuned or adapted model therefore never reuses the base model's replies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from transformer_lens import HookedTransformer

from pvlens.core.bulk import bulk_generate
from pvlens.core.chat import Message, encode_messages
from pvlens.core.config import SamplingConfig
from pvlens.core.fingerprint import json_hash, model_fingerprint
from pvlens.io.jsonl import KeyedTextStore

CACHE_FILE = "base_replies.jsonl"
"""The reply cache's file inside its cache folder."""


def reply_key(fingerprint: str, max_new_tokens: int, prompt: Sequence[Message]) -> str:
    """Cache key of one prompt's greedy reply from the model with this fingerprint."""
    return json_hash([fingerprint, max_new_tokens, list(prompt)], length=24)


def reply_store(cache_dir: str | Path) -> KeyedTextStore:
    """The on-disk reply cache of a cache folder."""
    return KeyedTextStore(Path(cache_dir) / CACHE_FILE, "reply")


class MemoryReplies(KeyedTextStore):
    """A reply store held in memory, prefilled with known replies; what is added is kept in
    `added` for a writer elsewhere (a Ray worker returns it to the driver, the one writer)."""

    def __init__(self, known: Mapping[str, str]) -> None:  # no file: nothing read, nothing written
        self.path, self.field = Path(CACHE_FILE), "reply"
        self.known = dict(known)
        self.added: dict[str, str] = {}

    def add(self, keys: list[str], texts: list[str]) -> None:
        """Store in memory and remember as new."""
        for k, t in zip(keys, texts, strict=True):
            self.known[k] = self.added[k] = t


class BaseReplies:
    """The base model's greedy replies, keyed by (model, prompt messages, length cap), on disk
    (or in a given `store`)."""

    def __init__(self, model: HookedTransformer, cache_dir: str | Path, max_new_tokens: int,
                 batch_size: int | None = None, store: KeyedTextStore | None = None) -> None:
        self.model, self.max_new_tokens, self.batch_size = model, max_new_tokens, batch_size
        self.store = store if store is not None else reply_store(cache_dir)

    @property
    def fp(self) -> str:
        """The model's current fingerprint (memoised by the helper; follows weight changes)."""
        return model_fingerprint(self.model)

    def key(self, prompt: Sequence[Message]) -> str:
        """Cache key of one prompt's reply."""
        return reply_key(self.fp, self.max_new_tokens, prompt)

    def get(self, prompts: Sequence[Sequence[Message]]) -> list[str]:
        """Replies for every prompt, generating (greedy) and caching the missing ones."""
        keys = [self.key(p) for p in prompts]
        missing = self.store.missing(keys)
        if missing:
            tok = self.model.tokenizer
            chats = [encode_messages(tok, prompts[i]) for _, i in missing]
            greedy = SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=0.0)
            texts = bulk_generate(self.model, chats, greedy, batch_size=self.batch_size).texts
            self.store.add([k for k, _ in missing], texts)
        return self.store.get(keys)
