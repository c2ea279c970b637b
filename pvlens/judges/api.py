"""Judges behind a chat API: the OpenAI logprob method (the paper's) and Anthropic's text replies.

Calls run on a thread pool; each call retries rate limits, server errors, timeouts and dropped
connections with exponential backoff (`pvlens.judges.retry`). A call that still fails becomes a
`Judgement` with `score=None` and the error text, is stored in the cache as a failure, and is
retried on the next run; it never aborts the batch.

Keys come only from the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY) or from a client you
pass in; pvlens never logs or stores them.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from pvlens.judges.base import Aspect, Judge, Pair, log
from pvlens.judges.cache import Judgement
from pvlens.judges.retry import RetryPolicy, call_with_retries, status_code
from pvlens.judges.scoring import MIN_INTEGER_MASS, parse_integer_reply, score_from_logprobs


class MissingAPIKey(RuntimeError):
    """The API key is not in the environment; the message names the variable."""


def _error_text(exc: BaseException) -> str:
    """A one-line description of a failed call (type, HTTP status, message; never headers)."""
    code = status_code(exc)
    msg = str(exc).splitlines()[0][:300] if str(exc) else ""
    return (
        f"{type(exc).__name__}" + (f" (HTTP {code})" if code else "") + (f": {msg}" if msg else "")
    )


class ApiJudge(Judge):
    """Shared machinery: thread pool, retries, failure capture."""

    env_var: str = ""

    def __init__(
        self,
        trait,
        *,
        model: str,
        client: Any | None = None,
        base_url: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        **kwargs,
    ):
        """
        Args:
            model: judge model name.
            client: a ready SDK client (its own key and base URL); None builds one from env.
            base_url: API endpoint (a proxy, a compatible local server, or a test stub).
            concurrency: parallel calls.
            timeout: seconds per HTTP request.
            retry: backoff policy (default: 6 attempts, 1 s doubling, at most 60 s).
        """
        super().__init__(trait, **kwargs)
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._model = model
        self.base_url = base_url
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def model(self) -> str:
        return self._model

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _api_key(self) -> str:
        key = os.environ.get(self.env_var)
        if key:
            return key
        if self.base_url is not None:
            return "unused"  # local OpenAI-compatible servers usually ignore the key
        raise MissingAPIKey(
            f"the {self.kind} judge needs the environment variable {self.env_var}; "
            f"export it, pass client=..., or use the offline judge (kind='offline')"
        )

    def _make_client(self):
        raise NotImplementedError

    def _call(self, prompt: str) -> Judgement:
        """One judgement from the API (may raise; retries happen around it)."""
        raise NotImplementedError

    def _judge_uncached(
        self,
        aspect: Aspect,
        pairs: list[Pair],
        store: Callable[[int, Judgement], None],
        progress: bool,
    ) -> None:
        _ = self.client  # build the client (and fail on a missing key) before the threads start

        def one(i: int) -> tuple[int, Judgement]:
            prompt = self.prompt(aspect, *pairs[i])

            def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
                log.info(
                    "%s: attempt %d failed (%s); retrying in %.1fs",
                    self.kind,
                    attempt,
                    _error_text(exc),
                    delay,
                )

            try:
                return i, call_with_retries(
                    lambda: self._call(prompt), self.retry, on_retry=on_retry
                )
            except Exception as exc:  # recorded as a failure, never raised
                return i, Judgement(None, error=_error_text(exc))

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pairs), desc=f"{self.kind} judge ({aspect})")
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(pairs))) as pool:
            for fut in as_completed([pool.submit(one, i) for i in range(len(pairs))]):
                i, judgement = fut.result()
                store(i, judgement)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()


class OpenAIJudge(ApiJudge):
    """The paper's judge: 1 token, temperature 0, top-20 logprobs, weighted mean of integers."""

    kind = "openai"
    env_var = "OPENAI_API_KEY"

    def __init__(
        self,
        trait,
        *,
        model: str = "gpt-4.1-mini",
        top_logprobs: int = 20,
        min_mass: float = MIN_INTEGER_MASS,
        seed: int | None = 0,
        **kwargs,
    ):
        """
        Args:
            model: judge model (the paper used gpt-4.1-mini).
            top_logprobs: how many alternatives the API returns (the API's maximum is 20).
            min_mass: integer probability mass below which there is no score (paper: 0.25).
            seed: sampling seed sent to the API (the paper's code sends 0).
        """
        super().__init__(trait, model=model, **kwargs)
        self.top_logprobs = top_logprobs
        self.min_mass = min_mass
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        return {"top_logprobs": self.top_logprobs, "min_mass": self.min_mass, "seed": self.seed}

    def _make_client(self):
        import openai

        return openai.OpenAI(
            api_key=self._api_key(), base_url=self.base_url, max_retries=0, timeout=self.timeout
        )

    def _call(self, prompt: str) -> Judgement:
        kwargs: dict[str, Any] = dict(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=self.top_logprobs,
        )
        if self.seed is not None:
            kwargs["seed"] = self.seed
        response = self.client.chat.completions.create(**kwargs)
        try:
            first = response.choices[0].logprobs.content[0]
            top = [(t.token, t.logprob) for t in first.top_logprobs]
        except (AttributeError, IndexError, TypeError) as exc:
            raise ValueError(
                f"the response carries no logprobs ({exc}); does {self.model} "
                "support logprobs=True?"
            ) from exc
        score, mass = score_from_logprobs(top, self.min_mass)
        return Judgement(score, detail={"integer_mass": round(mass, 6), "top": top[:5]})


class AnthropicJudge(ApiJudge):
    """Claude as judge. No logprobs: ask for the integer, parse it, average n samples.

    Differs from the paper: the paper's score is the expected value of the judge's distribution
    over integers; one reply is a single draw (at temperature 0, the mode). Averaging
    `n_samples` replies estimates the expected value; no-score means none of the replies held a
    whole number 0-100 (e.g. REFUSAL).
    """

    kind = "anthropic"
    env_var = "ANTHROPIC_API_KEY"
    system = "Follow the grading instructions exactly. Reply with the requested output only."

    def __init__(
        self,
        trait,
        *,
        model: str = "claude-haiku-4-5",
        n_samples: int = 1,
        temperature: float | None = None,
        max_tokens: int = 8,
        **kwargs,
    ):
        """
        Args:
            model: Claude model name.
            n_samples: replies averaged per judgement (1 = a single reply).
            temperature: sampling temperature sent to the API; None leaves the API default.
            max_tokens: reply budget (a number or REFUSAL needs a few tokens).
        """
        super().__init__(trait, model=model, **kwargs)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.n_samples = n_samples
        self.temperature = temperature
        self.max_tokens = max_tokens

    def settings(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _make_client(self):
        import anthropic

        return anthropic.Anthropic(
            api_key=self._api_key(), base_url=self.base_url, max_retries=0, timeout=self.timeout
        )

    def _call(self, prompt: str) -> Judgement:
        replies, values = [], []
        for _ in range(self.n_samples):
            kwargs: dict[str, Any] = dict(
                model=self.model,
                max_tokens=self.max_tokens,
                system=self.system,
                messages=[{"role": "user", "content": prompt}],
            )
            if self.temperature is not None:
                # extra_body: newer SDKs dropped the typed argument, the API still takes it
                kwargs["extra_body"] = {"temperature": self.temperature}
            response = self.client.messages.create(**kwargs)
            text = "".join(
                getattr(block, "text", "")
                for block in response.content
                if getattr(block, "type", "text") == "text"
            )
            replies.append(text)
            value = parse_integer_reply(text)
            if value is not None:
                values.append(value)
        score = statistics.fmean(values) if values else None
        return Judgement(score, detail={"replies": replies, "n_parsed": len(values)})
