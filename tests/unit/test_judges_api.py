"""OpenAI and Anthropic judges against a real HTTP stub server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pvlens.judges import JudgementCache, RetryPolicy, load_judge
from pvlens.judges.api import MissingAPIKey
from pvlens.traits import TraitSpec

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, jitter=0.0)


def spec() -> TraitSpec:
    return TraitSpec(
        name="testy",
        description="A test trait.",
        instructions=[{"pos": "Be testy.", "neg": "Be calm."}],
        extraction_questions=["Q?"],
        rubric="Rate testiness.\nQ: {question}\nA: {answer}\nNumber 0-100:",
    )


class Stub:
    """A scripted JSON API: queued (status, body) responses, then a default; records requests."""

    def __init__(self):
        self.queue: deque[tuple[int, dict]] = deque()
        self.default: tuple[int, dict] = (500, {"error": {"message": "no script"}})
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with stub.lock:
                    stub.requests.append(
                        {
                            "path": self.path,
                            "body": json.loads(body),
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                    status, payload = stub.queue.popleft() if stub.queue else stub.default
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path):
    return JudgementCache(tmp_path / "judgements.sqlite")


def openai_reply(top: dict[str, float]) -> dict:
    """A chat.completion with one generated token and the given top logprobs (as probabilities)."""
    tops = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in top.items()]
    first = max(top, key=top.get)
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4.1-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": first},
                "logprobs": {
                    "content": [
                        {
                            "token": first,
                            "logprob": math.log(top[first]),
                            "bytes": None,
                            "top_logprobs": tops,
                        }
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


def anthropic_reply(text: str) -> dict:
    return {
        "id": "msg_stub",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }


ERR_429 = (429, {"error": {"message": "slow down", "type": "rate_limit_error"}})
ERR_500 = (500, {"error": {"message": "boom", "type": "server_error"}})


def openai_judge(stub, cache, **kw):
    return load_judge(
        "openai", trait=spec(), base_url=stub.url + "/v1", cache=cache, retry=FAST, **kw
    )


# --- OpenAI ---------------------------------------------------------------------------------
def test_openai_weighted_mean_and_request_shape(stub, cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    stub.default = (200, openai_reply({"80": 0.5, "60": 0.3, " 80": 0.1, "x": 0.1}))
    judge = openai_judge(stub, cache)
    [score] = judge.score_many([("How are you?", "Leave me alone.")])
    # integers: 80 -> 0.6 (two spellings), 60 -> 0.3; mass 0.9
    assert score == pytest.approx((80 * 0.6 + 60 * 0.3) / 0.9, abs=1e-6)
    body = stub.requests[0]["body"]
    assert stub.requests[0]["path"] == "/v1/chat/completions"
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["model"] == "gpt-4.1-mini"
    assert "Leave me alone." in body["messages"][0]["content"]
    assert stub.requests[0]["headers"]["authorization"] == "Bearer sk-test-secret"


def test_openai_low_integer_mass_gives_none(stub, cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    stub.default = (200, openai_reply({"REFUSAL": 0.76, "90": 0.24}))
    assert openai_judge(stub, cache).score_many([("q", "a")]) == [None]
    stub.default = (200, openai_reply({"REFUSAL": 0.74, "90": 0.26}))
    assert openai_judge(stub, cache).score_many([("q", "a2")]) == [pytest.approx(90.0)]


def test_openai_retries_429_then_succeeds(stub, cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    stub.queue.extend([ERR_429, (200, openai_reply({"42": 1.0}))])
    assert openai_judge(stub, cache).score_many([("q", "a")]) == [pytest.approx(42.0)]
    assert len(stub.requests) == 2


def test_openai_server_error_forever_is_recorded_not_raised(stub, cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-stored")
    stub.default = ERR_500
    judge = openai_judge(stub, cache)
    assert judge.score_many([("q", "a"), ("q", "b")]) == [None, None]
    assert len(stub.requests) == 2 * FAST.max_attempts
    failures = cache.failures("openai")
    assert len(failures) == 2 and all("500" in f["error"] for f in failures)
    # the key never reaches the cache file
    assert b"sk-never-stored" not in (cache.path and open(cache.path, "rb").read())
    # a failure is retried on the next run, and replaced by the score
    stub.default = (200, openai_reply({"10": 1.0}))
    assert judge.score_many([("q", "a")]) == [pytest.approx(10.0)]
    assert len(cache.failures("openai")) == 1


def test_openai_bad_request_is_not_retried(stub, cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    stub.default = (400, {"error": {"message": "bad model", "type": "invalid_request_error"}})
    assert openai_judge(stub, cache).score_many([("q", "a")]) == [None]
    assert len(stub.requests) == 1


def test_cache_hit_sends_no_second_request(stub, cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    stub.default = (200, openai_reply({"70": 1.0}))
    pairs = [(f"q{i}", f"a{i}") for i in range(12)]
    judge = openai_judge(stub, cache, concurrency=6)
    first = judge.score_many(pairs)
    assert len(stub.requests) == 12 and first == [pytest.approx(70.0)] * 12
    again = openai_judge(stub, cache).score_many(pairs + [("q0", "a0")])  # a fresh judge
    assert len(stub.requests) == 12 and again == first + [first[0]]
    # the coherence rubric is another judgement: it does call the API
    judge.coherence_many([("q0", "a0")])
    assert len(stub.requests) == 13
    assert "coherence" in stub.requests[-1]["body"]["messages"][0]["content"].lower()
    # so does another judge model
    openai_judge(stub, cache, model="gpt-4.1").score_many([("q0", "a0")])
    assert len(stub.requests) == 14


def test_duplicate_pairs_in_one_batch_are_judged_once(stub, cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    stub.default = (200, openai_reply({"33": 1.0}))
    out = openai_judge(stub, cache).score_many([("q", "a")] * 5)
    assert out == [pytest.approx(33.0)] * 5 and len(stub.requests) == 1


def test_missing_key_is_a_clear_error(cache, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = load_judge("openai", trait=spec(), cache=cache)
    with pytest.raises(MissingAPIKey, match="OPENAI_API_KEY"):
        judge.score_many([("q", "a")])


def test_injected_client_is_used(stub, cache, monkeypatch):
    import openai

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    stub.default = (200, openai_reply({"5": 1.0}))
    client = openai.OpenAI(api_key="injected", base_url=stub.url + "/v1", max_retries=0)
    judge = load_judge("openai", trait=spec(), client=client, cache=cache)
    assert judge.score_many([("q", "a")]) == [pytest.approx(5.0)]
    assert stub.requests[0]["headers"]["authorization"] == "Bearer injected"


# --- Anthropic ------------------------------------------------------------------------------
def anthropic_judge(stub, cache, **kw):
    return load_judge("anthropic", trait=spec(), base_url=stub.url, cache=cache, retry=FAST, **kw)


def test_anthropic_parses_and_averages_samples(stub, cache, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak")
    stub.queue.extend(
        [
            (200, anthropic_reply("70")),
            (200, anthropic_reply("Score: 80")),
            (200, anthropic_reply("REFUSAL")),
        ]
    )
    judge = anthropic_judge(stub, cache, n_samples=3, temperature=1.0)
    assert judge.score_many([("q", "a")]) == [pytest.approx(75.0)]
    assert len(stub.requests) == 3
    body = stub.requests[0]["body"]
    assert stub.requests[0]["path"] == "/v1/messages"
    assert body["temperature"] == 1.0 and body["model"] == "claude-haiku-4-5"
    headers = stub.requests[0]["headers"]  # SDK versions differ: x-api-key or a bearer token
    assert headers.get("x-api-key") == "ak" or headers.get("authorization") == "Bearer ak"


def test_anthropic_refusal_gives_none_and_default_sends_no_temperature(stub, cache, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak")
    stub.default = (200, anthropic_reply("REFUSAL"))
    assert anthropic_judge(stub, cache).score_many([("q", "a")]) == [None]
    assert "temperature" not in stub.requests[0]["body"]
    assert cache.failures() == []  # a refusal is a judgement, not a failure


def test_anthropic_retries_429(stub, cache, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak")
    stub.queue.extend([ERR_429, ERR_429, (200, anthropic_reply("12"))])
    assert anthropic_judge(stub, cache).score_many([("q", "a")]) == [pytest.approx(12.0)]
    assert len(stub.requests) == 3


def test_anthropic_500_forever_recorded(stub, cache, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak")
    stub.default = ERR_500
    assert anthropic_judge(stub, cache).score_many([("q", "a")]) == [None]
    [failure] = cache.failures("anthropic")
    assert "500" in failure["error"]


def test_describe_names_kind_model_and_rubric(cache):
    judge = load_judge("anthropic", trait=spec(), cache=cache, model="claude-x")
    d = judge.describe()
    assert d["kind"] == "anthropic" and d["model"] == "claude-x" and d["trait"] == "testy"
    assert len(d["rubric_hash"]) == 16 and d["rubric_hash"] != d["coherence_rubric_hash"]
    other = load_judge("anthropic", trait=spec(), cache=cache, rubric="New {question} {answer}")
    assert other.describe()["rubric_hash"] != d["rubric_hash"]


# --- secrets, endpoints, one client ---------------------------------------------------------
class LeakyClient:
    """An injected SDK-like client whose every call fails with an error quoting its key."""

    def __init__(self, key: str, status: int | None = None):
        self.api_key = key
        self.calls = 0
        client = self

        class Completions:
            def create(self, **kwargs):
                client.calls += 1
                exc = RuntimeError(f"auth failed for key {key} (Authorization: Bearer {key})")
                exc.status_code = status
                raise exc

        class Chat:
            completions = Completions()

        self.chat = Chat()
        self.messages = Completions()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_api_key_never_leaves_the_client(kind, cache, monkeypatch, caplog):
    import logging

    env_key = "sk-envsecret-0123456789abcdef"
    injected = "inj-9f8e7d6c5b4a-secret"
    monkeypatch.setenv("OPENAI_API_KEY", env_key)
    monkeypatch.setenv("ANTHROPIC_API_KEY", env_key)
    caplog.set_level(logging.DEBUG)
    client = LeakyClient(injected, status=503)  # retryable: the retry log lines are checked too
    judge = load_judge(kind, trait=spec(), client=client, cache=cache, retry=FAST)
    [j] = judge.judge_many([("q", "a")])
    assert j.failed and client.calls == FAST.max_attempts
    assert "auth failed" in j.error and "***" in j.error
    for secret in (env_key, injected):
        assert secret not in j.error
        assert secret not in caplog.text
        assert secret.encode() not in open(cache.path, "rb").read()
        assert secret not in json.dumps(judge.describe())
    # the exception a direct client call raises is redacted as well
    from pvlens.judges.llm_client import LLMCallError

    with pytest.raises(LLMCallError) as info:
        judge.llm.call(lambda sdk: sdk.chat.completions.create())
    assert injected not in str(info.value) and env_key not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_redact_removes_known_and_key_shaped_secrets(monkeypatch):
    from pvlens.judges.llm_client import redact

    monkeypatch.setenv("OPENAI_API_KEY", "plain-env-key-value")
    text = "a plain-env-key-value b sk-ant-api03-abcdefghijkl c Bearer tok_123456789 d given-key"
    out = redact(text, ["given-key"])
    for s in ("plain-env-key-value", "sk-ant-api03-abcdefghijkl", "tok_123456789", "given-key"):
        assert s not in out
    assert out.startswith("a *** b *** c Bearer *** d ***")


def test_cache_key_includes_the_endpoint(cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    a, b = Stub(), Stub()
    try:
        a.default = (200, openai_reply({"10": 1.0}))
        b.default = (200, openai_reply({"90": 1.0}))
        ja = load_judge("openai", trait=spec(), base_url=a.url + "/v1", cache=cache, retry=FAST)
        jb = load_judge("openai", trait=spec(), base_url=b.url + "/v1", cache=cache, retry=FAST)
        assert ja.score_many([("q", "a")]) == [pytest.approx(10.0)]
        assert jb.score_many([("q", "a")]) == [pytest.approx(90.0)]  # not server a's answer
        assert len(cache) == 2 and len(a.requests) == 1 and len(b.requests) == 1
        assert ja.describe()["endpoint"] == a.url + "/v1"
        assert ja.score_many([("q", "a")]) == [pytest.approx(10.0)] and len(a.requests) == 1
    finally:
        a.close()
        b.close()


def test_trait_generation_and_judges_share_one_client_and_policy():
    from pvlens.judges import api, llm_client, retry
    from pvlens.traits import generate

    assert retry.RetryPolicy is llm_client.RetryPolicy is api.RetryPolicy
    backend = generate.make_backend(generate.GenerationConfig(max_retries=4), client=object())
    assert isinstance(backend.llm, llm_client.LLMClient) and backend.llm.retry.max_attempts == 5


def test_endpoint_is_stable_and_redacted(stub, cache, monkeypatch):
    import openai

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    stub.default = (200, openai_reply({"5": 1.0}))
    plain = load_judge("openai", trait=spec(), cache=cache)
    assert plain.endpoint() is None
    _ = plain.client  # building the SDK client does not change the key
    assert plain.endpoint() is None
    client = openai.OpenAI(api_key="injected-secret-key", base_url=stub.url + "/v1", max_retries=0)
    injected = load_judge("openai", trait=spec(), client=client, cache=cache)
    assert injected.endpoint().rstrip("/") == stub.url + "/v1"
    with_creds = load_judge("openai", trait=spec(), cache=cache,
                            base_url="https://user:sk-inurl-0123456789@proxy.example/v1")
    assert "sk-inurl-0123456789" not in json.dumps(with_creds.describe())
