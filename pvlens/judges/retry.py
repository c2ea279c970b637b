"""Retries with exponential backoff for API judges.

Retried: HTTP 408/409/429 and 5xx, timeouts and connection errors (from the openai and
anthropic SDKs, httpx, or the standard library). Everything else (400, 401, 404, ...) fails at
once: retrying a bad request or a bad key only burns time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

RETRY_STATUS = {408, 409, 429}
_RETRY_CLASS_NAMES = {
    "APIConnectionError",
    "APITimeoutError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "ReadError",
    "RemoteProtocolError",
    "TimeoutException",
    "OverloadedError",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failed API call."""

    max_attempts: int = 6
    """Total tries per call (1 = no retry)."""
    base_delay: float = 1.0
    """Seconds before the first retry; doubles each time."""
    max_delay: float = 60.0
    """Upper bound on one wait (also caps a server's Retry-After)."""
    jitter: float = 0.25
    """Random extra fraction of each wait, so parallel workers do not retry in lockstep."""


def status_code(exc: BaseException) -> int | None:
    """The HTTP status attached to an SDK/httpx error, if any."""
    code = getattr(exc, "status_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def is_retryable(exc: BaseException) -> bool:
    """True for rate limits, server errors, timeouts and dropped connections."""
    code = status_code(exc)
    if code is not None:
        return code in RETRY_STATUS or code >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return any(cls.__name__ in _RETRY_CLASS_NAMES for cls in type(exc).__mro__)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Run `fn`, retrying retryable errors with exponential backoff; re-raise the last error."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.max_attempts or not is_retryable(exc):
                raise
            delay = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
            server = _retry_after(exc)
            if server is not None:
                delay = min(policy.max_delay, max(delay, server))
            delay *= 1.0 + policy.jitter * random.random()
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
