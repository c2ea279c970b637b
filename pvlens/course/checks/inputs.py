"""Small fixed inputs for the chapter 4–8 checks: a few chats on the shared tiny model, seeded
vectors, and `close` for answers that may come back as numbers or arrays."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.chat import EncodedChat, encode_conversation, encode_messages
from pvlens.course.checks import common
from pvlens.course.checks.common import passed, tiny

EXCHANGES = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Give me a tip for studying.", "Take short breaks and test yourself often."),
    ("How do I boil an egg?", "Put it in boiling water for eight minutes, then cool it."),
]
"""(question, answer) pairs the checks turn into chats."""

LAYER = 1
"""The tiny model's block the checks read (its last one)."""


def conversations(model: HookedTransformer) -> list[EncodedChat]:
    """Question + answer chats with their prompt/response boundary."""
    tok = model.tokenizer
    return [encode_conversation(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
            for q, a in EXCHANGES]


def prompts(model: HookedTransformer) -> list[EncodedChat]:
    """The same questions as prompts ending with the assistant header."""
    return [encode_messages(model.tokenizer, [{"role": "user", "content": q}]) for q, _ in EXCHANGES]


def vector(d: int, seed: int = 0) -> Tensor:
    """A seeded random (raw, not unit) vector of norm ≈ 3."""
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(d, generator=g) / d**0.5


def close(got: Any, want: Tensor, name: str, hint: str = "", atol: float = 1e-4, rtol: float = 1e-4) -> None:
    """`common.close` on float64 copies, accepting numbers and arrays as well as tensors."""
    got = got if isinstance(got, Tensor) else torch.as_tensor(got)
    common.close(got.detach().to(torch.float64).cpu(), want.detach().to(torch.float64).cpu(), name, hint,
                 rtol=rtol, atol=atol)


def run_check(name: str, body: Callable[[], None]) -> None:
    """Run one check's comparisons, then report success."""
    with torch.no_grad():
        body()
    passed(name)

__all__ = ["EXCHANGES", "LAYER", "close", "conversations", "passed", "prompts", "run_check", "tiny", "vector"]
