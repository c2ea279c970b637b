"""Judges behind a chat API: the OpenAI logprob method (the paper's) and Anthropic's text replies.

Calls run on a thread pool through the shared `LLMClient` (`pvlens.judges.llm_client`): one
retry policy for rate limits, server errors, timeouts and dropped connections, and one
redaction of secrets for every error that leaves the client. A call that still fails becomes a
`Judgement` with `score=None` and the (redacted) error text, is stored in the cache as a
failure, and is retried on the next run; it never aborts the batch.

Keys come only from the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY) or from a client you
pass in; pvlens never logs or stores them.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from pvlens.judges.base import Aspect, Judge, PendingBatch
from pvlens.judges.cache import Judgement
from pvlens.judges.llm_client import (
    LLMCallError,
    LLMClient,
    MissingAPIKey,
    Provider,
    RetryPolicy,
    redact,
)
from pvlens.judges.scoring import MIN_INTEGER_MASS, parse_integer_reply, score_from_logprobs
from pvlens.traits import TraitSpec

__all__ = ["AnthropicJudge", "ApiJudge", "MissingAPIKey", "OpenAIJudge"]


class ApiJudge(Judge):
    """Shared machinery: the LLM client (retries, redaction), a thread pool, failure capture."""

    provider: Provider = "openai"

    def __init__(
        self,
        trait: str | TraitSpec,
        *,
        model: str,
        client: Any | None = None,
        base_url: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
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
        self.llm = LLMClient(self.provider, client=client, base_url=base_url, timeout=timeout,
                             retry=retry, keyless_endpoint=True)

    @property
    def model(self) -> str:
        return self._model

    @property
    def client(self) -> Any:
        """The SDK client (built from the environment on first use)."""
        return self.llm.sdk

    @property
    def retry(self) -> RetryPolicy:
        return self.llm.retry

    def endpoint(self) -> str | None:
        """The API base URL (an injected client's, or None for the SDK default), redacted:
        a URL with credentials in it never reaches the cache or a manifest in clear."""
        url = self.base_url if self.base_url is not None else self.llm.base_url_of_client()
        return redact(url, self.llm.secrets()) if url is not None else None

    def _call(self, sdk: Any, prompt: str) -> Judgement:
        """One judgement from the API (may raise; retries happen around it)."""
        raise NotImplementedError

    def judge_one(self, aspect: Aspect, question: str, answer: str) -> Judgement:
        """One judgement through the client; a failed call becomes a recorded failure."""
        prompt = self.prompt(aspect, question, answer)
        try:
            return self.llm.call(lambda sdk: self._call(sdk, prompt))
        except LLMCallError as exc:  # recorded as a failure (already redacted), never raised
            return Judgement(None, error=str(exc))

    def _judge_uncached(self, batch: PendingBatch) -> None:
        _ = self.client  # build the client (and fail on a missing key) before the threads start
        bar = batch.progress_bar(self.kind)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batch.pairs))) as pool:
            futures = {pool.submit(self.judge_one, batch.aspect, *pair): i
                       for i, pair in enumerate(batch.pairs)}
            for fut in as_completed(futures):
                batch.store(futures[fut], fut.result())
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()


class OpenAIJudge(ApiJudge):
    """The paper's judge: 1 token, temperature 0, top-20 logprobs, weighted mean of integers."""

    kind = "openai"
    provider = "openai"

    def __init__(
        self,
        trait: str | TraitSpec,
        *,
        model: str = "gpt-4.1-mini",
        top_logprobs: int = 20,
        min_mass: float = MIN_INTEGER_MASS,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> None:
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

    def _call(self, sdk: Any, prompt: str) -> Judgement:
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
        response = sdk.chat.completions.create(**kwargs)
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
    provider = "anthropic"
    system = "Follow the grading instructions exactly. Reply with the requested output only."

    def __init__(
        self,
        trait: str | TraitSpec,
        *,
        model: str = "claude-haiku-4-5",
        n_samples: int = 1,
        temperature: float | None = None,
        max_tokens: int = 8,
        **kwargs: Any,
    ) -> None:
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

    def _call(self, sdk: Any, prompt: str) -> Judgement:
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
            response = sdk.messages.create(**kwargs)
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
