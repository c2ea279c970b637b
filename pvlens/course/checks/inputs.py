"""Small fixed inputs for the chapter 4–8 checks: the tiny random model, a few chats, vectors,
and one way to compare a student's answer with the reference and say what went wrong."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.chat import EncodedChat, encode_conversation, encode_messages

EXCHANGES = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Give me a tip for studying.", "Take short breaks and test yourself often."),
    ("How do I boil an egg?", "Put it in boiling water for eight minutes, then cool it."),
]
"""(question, answer) pairs the checks turn into chats."""

LAYER = 1
"""The tiny model's block the checks read (its last one)."""


@lru_cache(maxsize=1)
def tiny() -> HookedTransformer:
    """The tiny random 2-layer model (built once per process)."""
    from pvlens.core.model import tiny_model

    model = tiny_model(n_layers=2, d_model=64)
    model.eval()
    return model


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
    """`torch.testing.assert_close` with the exercise's name and a hint in the message."""
    if not isinstance(got, Tensor):
        got = torch.as_tensor(got)
    got = got.detach().to(torch.float64).cpu()
    want = want.detach().to(torch.float64).cpu()
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}. {hint}")

    def message(m: str) -> str:
        return f"{name}: your result differs from pvlens's reference.\n{m}\n{hint}"

    torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=message)


def passed(name: str) -> None:
    print(f"✓ {name} passed")


def run_check(name: str, body: Callable[[], None]) -> None:
    """Run one check's comparisons, then report success."""
    with torch.no_grad():
        body()
    passed(name)
