"""The base model's own greedy replies to the dataset's prompts, cached on disk.

The key covers everything a reply depends on: the model's full fingerprint (every weight and
LoRA adapter, `pvlens.core.fingerprint.model_fingerprint`), the length cap and the prompt. A
finetuned or adapted model therefore never reuses the base model's replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformer_lens import HookedTransformer

from pvlens.core.chat import Message, encode_messages
from pvlens.core.fingerprint import json_hash, model_fingerprint
from pvlens.core.generation import generate
from pvlens.io.jsonl import KeyedTextStore


class BaseReplies:
    """The base model's greedy replies, keyed by (model, prompt messages, length cap), on disk."""

    def __init__(self, model: HookedTransformer, cache_dir: str | Path, max_new_tokens: int,
                 batch_size: int = 16) -> None:
        self.model, self.max_new_tokens, self.batch_size = model, max_new_tokens, batch_size
        self.store = KeyedTextStore(Path(cache_dir) / "base_replies.jsonl", "reply")

    @property
    def fp(self) -> str:
        """The model's current fingerprint (memoised by the helper; follows weight changes)."""
        return model_fingerprint(self.model)

    def key(self, prompt: Sequence[Message]) -> str:
        """Cache key of one prompt's reply."""
        return json_hash([self.fp, self.max_new_tokens, list(prompt)], length=24)

    def get(self, prompts: Sequence[Sequence[Message]]) -> list[str]:
        """Replies for every prompt, generating (greedy) and caching the missing ones."""
        keys = [self.key(p) for p in prompts]
        missing = self.store.missing(keys)
        if missing:
            tok = self.model.tokenizer
            chats = [encode_messages(tok, prompts[i]) for _, i in missing]
            texts = generate(self.model, chats, max_new_tokens=self.max_new_tokens, temperature=0.0,
                             batch_size=self.batch_size, progress=False).texts
            self.store.add([k for k, _ in missing], texts)
        return self.store.get(keys)
