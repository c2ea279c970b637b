"""Helpers the chapter checks share: run the student's function, compare, report."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


def passed(name: str) -> None:
    """The line a notebook shows when a check passes (the build and `pvlens course check` count it)."""
    print(f"✓ {name} passed")


def call(student_fn: Callable[..., Any], *args: Any, name: str, **kwargs: Any) -> Any:
    """Call the student's function; a blank exercise's NotImplementedError propagates unchanged."""
    if not callable(student_fn):
        raise AssertionError(f"{name}: expected a function, got {type(student_fn).__name__}")
    return student_fn(*args, **kwargs)


def close(actual: Any, expected: torch.Tensor, name: str, hint: str = "",
          rtol: float | None = None, atol: float | None = None) -> None:
    """`torch.testing.assert_close` with the check's name and a hint in the message."""
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{name}: expected a torch.Tensor, got {type(actual).__name__}. {hint}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}. {hint}")
    try:
        torch.testing.assert_close(actual.detach().to(expected.dtype).cpu(), expected.detach().cpu(),
                                   rtol=rtol, atol=atol)
    except AssertionError as e:
        raise AssertionError(f"{name}: values differ from the reference. {hint}\n{e}") from None


def require(condition: bool, name: str, message: str) -> None:
    """An AssertionError naming the check when `condition` is false."""
    if not condition:
        raise AssertionError(f"{name}: {message}")


@functools.lru_cache(maxsize=1)
def tiny() -> Any:
    """The tiny random model every check shares (built once per kernel)."""
    import pvlens

    return pvlens.tiny_model()
