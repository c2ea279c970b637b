"""Score math (the paper's weighted mean and 0.25 cutoff), reply parsing, retries, the cache."""

from __future__ import annotations

import math
import threading

import pytest

from pvlens.judges.cache import Judgement, JudgementCache, judgement_key
from pvlens.judges.retry import RetryPolicy, call_with_retries, is_retryable
from pvlens.judges.scoring import (
    integer_distribution,
    parse_integer_reply,
    score_from_logprobs,
    token_integer,
    weighted_score,
)


@pytest.mark.parametrize(
    "token,value",
    [
        ("0", 0),
        ("42", 42),
        (" 7", 7),
        ("100", 100),
        ("101", None),
        ("-3", None),
        ("4.5", None),
        ("a", None),
        ("", None),
        ("1000", None),
        ("REFUSAL", None),
    ],
)
def test_token_integer(token, value):
    assert token_integer(token) == value


def test_weighted_mean_matches_hand_computation():
    top = [
        ("90", math.log(0.5)),
        ("80", math.log(0.25)),
        (" 90", math.log(0.05)),
        ("hello", math.log(0.2)),
    ]
    score, mass = score_from_logprobs(top)
    assert mass == pytest.approx(0.8)
    assert score == pytest.approx((90 * 0.55 + 80 * 0.25) / 0.8)


def test_mass_cutoff_is_0_25():
    assert weighted_score({50: 0.2499})[0] is None
    assert weighted_score({50: 0.25})[0] == pytest.approx(50.0)
    assert weighted_score({})[0] is None
    assert weighted_score({10: 0.1, 30: 0.1}, min_mass=0.1)[0] == pytest.approx(20.0)


def test_integer_distribution_sums_spellings():
    dist = integer_distribution([("7", 0.1), (" 7", 0.2), ("07", 0.3), ("x", 0.4)])
    assert dist == {7: pytest.approx(0.6)}  # "07" parses as 7 too: the paper's int() does


@pytest.mark.parametrize(
    "text,value",
    [
        ("73", 73),
        ("Score: 73", 73),
        ("73/100", 73),
        (" 0\n", 0),
        ("100", 100),
        ("REFUSAL", None),
        ("150", None),
        ("4.5", None),
        ("-2", None),
        ("", None),
    ],
)
def test_parse_integer_reply(text, value):
    assert parse_integer_reply(text) == value


class HTTPError(Exception):
    def __init__(self, status_code):
        super().__init__(f"status {status_code}")
        self.status_code = status_code


class APIConnectionError(Exception):
    pass


@pytest.mark.parametrize(
    "exc,retry",
    [
        (HTTPError(429), True),
        (HTTPError(500), True),
        (HTTPError(503), True),
        (HTTPError(408), True),
        (HTTPError(400), False),
        (HTTPError(401), False),
        (HTTPError(404), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (APIConnectionError(), True),
        (ValueError("parse"), False),
    ],
)
def test_is_retryable(exc, retry):
    assert is_retryable(exc) is retry


def test_backoff_doubles_and_gives_up():
    sleeps: list[float] = []
    calls = []

    def fail():
        calls.append(1)
        raise HTTPError(500)

    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=3.0, jitter=0.0)
    with pytest.raises(HTTPError):
        call_with_retries(fail, policy, sleep=sleeps.append)
    assert len(calls) == 4 and sleeps == [1.0, 2.0, 3.0]


def test_retry_then_success_returns_value():
    outcomes = iter([HTTPError(429), TimeoutError(), "ok"])

    def flaky():
        out = next(outcomes)
        if isinstance(out, Exception):
            raise out
        return out

    assert call_with_retries(flaky, RetryPolicy(base_delay=0.0), sleep=lambda s: None) == "ok"


def test_cache_roundtrip_and_threads(tmp_path):
    cache = JudgementCache(tmp_path / "c.sqlite")
    keys = [judgement_key("k", "m", "r", {}, f"q{i}", "a") for i in range(200)]

    def write(chunk):
        for key in chunk:
            cache.put(
                key,
                Judgement(float(len(key) % 7), detail={"x": 1}),
                kind="k",
                model="m",
                rubric_hash="r",
                question="q",
                answer="a",
            )

    threads = [threading.Thread(target=write, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 200
    again = JudgementCache(tmp_path / "c.sqlite")  # another connection sees everything
    got = again.get_many(keys)
    assert len(got) == 200 and got[keys[0]].detail == {"x": 1}
    cache.put(
        keys[1],
        Judgement(None, error="HTTP 500"),
        kind="k",
        model="m",
        rubric_hash="r",
        question="q",
        answer="a",
    )
    assert again.get_many([keys[1]])[keys[1]].failed
    assert [f["error"] for f in again.failures()] == ["HTTP 500"]


def test_key_depends_on_every_field():
    base = ("openai", "gpt", "abc", {"top_logprobs": 20}, "q", "a")
    k = judgement_key(*base)
    for i, other in enumerate(["anthropic", "gpt2", "abd", {"top_logprobs": 5}, "q2", "a2"]):
        changed = list(base)
        changed[i] = other
        assert judgement_key(*changed) != k
