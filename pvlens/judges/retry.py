"""Moved: the one retry policy lives in `pvlens.judges.llm_client` (shared by the API judges and
trait generation). These names stay importable from here."""

from __future__ import annotations

from pvlens.judges.llm_client import RetryPolicy, call_with_retries, is_retryable, status_code

__all__ = ["RetryPolicy", "call_with_retries", "is_retryable", "status_code"]
