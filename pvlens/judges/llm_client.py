"""The one client for hosted LLMs (OpenAI, Anthropic, compatible servers): SDK construction
from the environment, ONE retry policy, and ONE redaction of secrets.

Used by the API judges (`pvlens.judges.api`) and by trait generation
(`pvlens.traits.generate`). Every error that leaves `LLMClient.call` is an `LLMCallError`
whose message went through `redact`, so an API key never reaches output, logs, the judge
cache, manifests or exceptions.

Retried: HTTP 408/409/429 and 5xx, timeouts and connection errors (from the openai and
anthropic SDKs, httpx, or the standard library). Everything else (400, 401, 404, ...) fails at
once: retrying a bad request or a bad key only burns time. The SDKs' own retries are off
(`max_retries=0`) so this policy is the only one.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pvlens.errors import PvlensError

T = TypeVar("T")
log = logging.getLogger("pvlens.llm")

Provider = Literal["openai", "anthropic"]
API_KEY_ENV: dict[str, str] = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
"""The environment variable each provider's key is read from (the only place keys come from)."""
PROVIDER_LABEL: dict[str, str] = {"anthropic": "Anthropic", "openai": "OpenAI"}


# --- retries ---------------------------------------------------------------------------------
RETRY_STATUS = {408, 409, 429}
RETRY_CLASS_NAMES = {
    "APIConnectionError", "APITimeoutError", "ConnectError", "ConnectTimeout", "ReadTimeout",
    "ReadError", "RemoteProtocolError", "TimeoutException", "OverloadedError",
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

    def delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        server = retry_after(exc)
        if server is not None:
            delay = min(self.max_delay, max(delay, server))
        return delay * (1.0 + self.jitter * random.random())


def status_code(exc: BaseException) -> int | None:
    """The HTTP status attached to an SDK/httpx error, if any."""
    code = getattr(exc, "status_code", None)
    if code is None:
        code = getattr(getattr(exc, "response", None), "status_code", None)
    return code if isinstance(code, int) else None


def is_retryable(exc: BaseException) -> bool:
    """True for rate limits, server errors, timeouts and dropped connections."""
    code = status_code(exc)
    if code is not None:
        return code in RETRY_STATUS or code >= 500
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    return any(cls.__name__ in RETRY_CLASS_NAMES for cls in type(exc).__mro__)


def retry_after(exc: BaseException) -> float | None:
    """The server's Retry-After (seconds) on an error response, if it sent one."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
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
            delay = policy.delay(attempt, exc)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)


# --- secrets ---------------------------------------------------------------------------------
KEY_PATTERN = re.compile(
    r"(?:sk-[A-Za-z0-9_\-]{8,}|(?<=Bearer )[A-Za-z0-9_\-\.]{8,}|(?<=x-api-key: )\S{8,})"
)
"""Key-shaped strings (OpenAI/Anthropic `sk-...`, bearer tokens) removed even when unknown."""
REDACTED = "***"


def known_secrets(extra: Iterable[str | None] = ()) -> list[str]:
    """The API keys in the environment plus `extra` (short or empty values are ignored)."""
    values = [os.environ.get(var, "") for var in API_KEY_ENV.values()] + list(extra)
    return sorted({v.strip() for v in values if v and len(v.strip()) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every known key (environment, `secrets`) and every key-shaped string replaced."""
    for secret in known_secrets(secrets):
        text = text.replace(secret, REDACTED)
    return KEY_PATTERN.sub(REDACTED, text)


def describe_error(exc: BaseException) -> str:
    """A one-line description of a failed call: message, error type and HTTP status."""
    code = status_code(exc)
    msg = str(exc).splitlines()[0][:500] if str(exc) else ""
    tag = type(exc).__name__ + (f", HTTP {code}" if code else "")
    return f"{msg} [{tag}]" if msg else f"[{tag}]"


class MissingAPIKey(PvlensError, RuntimeError):
    """The API key is not in the environment; the message names the variable."""


class LLMCallError(PvlensError):
    """A call to a hosted LLM failed after the retries; the message holds no secret."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- the client ------------------------------------------------------------------------------
class LLMClient:
    """An SDK client for one provider, built lazily from the environment (or injected), whose
    calls go through the one retry policy and leave only redacted errors."""

    def __init__(
        self,
        provider: Provider,
        *,
        client: Any | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        keyless_endpoint: bool = False,
    ) -> None:
        """
        Args:
            provider: 'openai' (or a compatible server) or 'anthropic'.
            client: a ready SDK client (its own key and base URL); None builds one from env.
            base_url: API endpoint (a proxy, a compatible local server, or a test stub).
            timeout: seconds per HTTP request.
            retry: backoff policy (default: 6 attempts, 1 s doubling, at most 60 s).
            keyless_endpoint: with a `base_url` and no key in the environment, send a dummy key
                (local OpenAI-compatible servers ignore it) instead of failing.
        """
        if provider not in API_KEY_ENV:
            raise ValueError(f"unknown provider {provider!r}; use 'anthropic' or 'openai'")
        self.provider, self.base_url, self.timeout = provider, base_url, timeout
        self.retry = retry or RetryPolicy()
        self.keyless_endpoint = keyless_endpoint
        self._sdk = client
        url = getattr(client, "base_url", None) if client is not None else None
        self._injected_url = str(url) if url is not None else None
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return PROVIDER_LABEL[self.provider]

    @property
    def env_var(self) -> str:
        return API_KEY_ENV[self.provider]

    def api_key(self) -> str:
        """The key from the environment (or a dummy for a keyless local endpoint)."""
        key = os.environ.get(self.env_var, "").strip()
        if key:
            return key
        if self.keyless_endpoint and self.base_url is not None:
            return "unused"
        raise MissingAPIKey(
            f"no API key for provider '{self.provider}': set the environment variable "
            f"{self.env_var} (pvlens reads keys only from the environment), or pass client=..."
        )

    @property
    def sdk(self) -> Any:
        """The SDK client (built on first use; the SDK's own retries are off)."""
        with self._lock:
            if self._sdk is None:
                self._sdk = self._build_sdk()
            return self._sdk

    def _build_sdk(self) -> Any:
        key = self.api_key()
        if self.provider == "openai":
            import openai

            return openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout)
        import anthropic

        return anthropic.Anthropic(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout)

    def base_url_of_client(self) -> str | None:
        """The base URL of an injected SDK client (None when the client is built here)."""
        return self._injected_url

    def secrets(self) -> list[str]:
        """Every key this client may hold (environment and an injected client's own key)."""
        return known_secrets([getattr(self._sdk, "api_key", None)])

    def error_message(self, exc: BaseException) -> str:
        """'{Provider} API error: ...' for `exc`, redacted."""
        return redact(f"{self.label} API error: {describe_error(exc)}", self.secrets())

    def call(self, fn: Callable[[Any], T]) -> T:
        """`fn(sdk)` under the retry policy; any failure leaves as a redacted LLMCallError."""
        sdk = self.sdk

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            log.info("%s: attempt %d failed (%s); retrying in %.1fs", self.label, attempt,
                     self.error_message(exc), delay)

        try:
            return call_with_retries(lambda: fn(sdk), self.retry, on_retry=on_retry)
        except Exception as exc:
            raise LLMCallError(self.error_message(exc), status_code(exc)) from None
