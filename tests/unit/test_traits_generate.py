"""`traits new`: the official SDKs against a real HTTP stub on 127.0.0.1 (no network)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pvlens.cli.traits import app
from pvlens.traits import TraitSpec, load_trait
from pvlens.traits.generate import (
    GenerationConfig,
    GenerationError,
    ReplyError,
    build_prompt,
    extract_json,
    generate_trait,
    parse_reply,
)

SECRET = "sk-test-SECRET-0123456789"


class Stub:
    """A Messages / Chat Completions look-alike that replays canned texts and records requests."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, str]] = []  # (text, stop) per request, in order
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                text, stop = stub.replies.pop(0)
                status = 200
                if stop == "401":  # an auth failure whose message echoes the key, as real APIs do
                    status = 401
                    msg = f"Incorrect API key provided: {sent_key(stub.requests[-1])}"
                    payload: dict[str, Any] = {
                        "type": "error",
                        "error": {"type": "authentication_error", "message": msg},
                    }
                elif self.path.endswith("/messages"):
                    payload = {
                        "id": f"msg_{len(stub.requests)}",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [{"type": "text", "text": text}],
                        "stop_reason": {"stop": "end_turn", "length": "max_tokens"}[stop],
                        "stop_sequence": None,
                        "usage": {"input_tokens": 10, "output_tokens": 10},
                    }
                else:
                    payload = {
                        "id": f"chatcmpl-{len(stub.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": stop,
                                "logprobs": None,
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                    }
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def queue(self, *texts: str, stop: str = "stop") -> None:
        self.replies += [(t, stop) for t in texts]


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stub]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    s = Stub()
    s.thread.start()
    yield s
    s.server.shutdown()
    s.server.server_close()


def good_reply(trait: str = "humorous", **changes: Any) -> str:
    """A valid model reply, built from a built-in trait's artifacts."""
    s = load_trait(trait)
    data: dict[str, Any] = {
        "instructions": [p.model_dump() for p in s.instructions],
        "extraction_questions": s.extraction_questions,
        "evaluation_questions": s.evaluation_questions,
        "rubric": s.rubric,
        "exemplars": s.exemplars.model_dump(),
    }
    data.update(changes)
    return json.dumps(data)


def sent_key(request: dict[str, Any]) -> str:
    """The credential a request carried (anthropic 2.x sends a Bearer token, older SDKs x-api-key)."""
    headers = request["headers"]
    return headers.get("x-api-key") or headers.get("authorization", "")


def config(stub: Stub, provider: str, **kw: Any) -> GenerationConfig:
    base = stub.url + ("/v1" if provider == "openai" else "")
    return GenerationConfig(provider=provider, base_url=base, max_retries=0, **kw)


# --- providers ------------------------------------------------------------------------------


def test_anthropic_generates_valid_spec(stub: Stub) -> None:
    stub.queue(good_reply())
    spec = generate_trait("jokey", "Makes jokes all the time.", config(stub, "anthropic"))
    assert isinstance(spec, TraitSpec) and spec.name == "jokey"
    assert spec.description == "Makes jokes all the time."
    assert spec.instructions == load_trait("humorous").instructions
    (req,) = stub.requests
    assert req["path"] == "/v1/messages"
    assert SECRET in sent_key(req)
    body = req["body"]
    assert body["model"] == "claude-sonnet-4-5" and body["max_tokens"] == 16000
    assert "JSON" in body["system"] and "temperature" not in body
    assert "Makes jokes all the time." in body["messages"][0]["content"]


def test_openai_retries_after_malformed_reply(stub: Stub) -> None:
    stub.queue("Sure! Here are some ideas for the trait, but I forgot the JSON.", good_reply())
    spec = generate_trait(
        "jokey", "Makes jokes.", config(stub, "openai", model="gpt-test", attempts=2)
    )
    assert len(spec.extraction_questions) == 20
    assert [r["path"] for r in stub.requests] == ["/v1/chat/completions"] * 2
    first, second = (r["body"] for r in stub.requests)
    assert sent_key(stub.requests[0]) == f"Bearer {SECRET}"
    assert first["model"] == "gpt-test"
    assert first["response_format"] == {"type": "json_object"}
    assert first["messages"][0]["role"] == "system"
    # the retry carries the bad reply and says what was wrong with it
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "forgot the JSON" in second["messages"][2]["content"]
    assert "no JSON object" in second["messages"][3]["content"]


def test_validation_errors_are_fed_back(stub: Stub) -> None:
    three_pairs = json.loads(good_reply())["instructions"][:3]
    no_slots = "Rate the answer from 0 to 100."
    stub.queue(good_reply(instructions=three_pairs), good_reply(rubric=no_slots), good_reply())
    spec = generate_trait("jokey", "Makes jokes.", config(stub, "anthropic", attempts=3))
    assert len(spec.instructions) == 5
    feedback = [r["body"]["messages"][-1]["content"] for r in stub.requests[1:]]
    assert "'instructions' has 3 items; 5 are required" in feedback[0]
    assert "field 'rubric'" in feedback[1] and "{question}" in feedback[1]


def test_truncated_reply_is_retried(stub: Stub) -> None:
    stub.queue(good_reply()[:500], stop="length")
    stub.queue(good_reply())
    generate_trait("jokey", "Makes jokes.", config(stub, "anthropic", attempts=2, temperature=0.5))
    assert "cut off at the token limit" in stub.requests[1]["body"]["messages"][-1]["content"]
    assert stub.requests[0]["body"]["temperature"] == 0.5


def test_gives_up_after_attempts(stub: Stub) -> None:
    stub.queue("not json", "[1, 2, 3]")
    with pytest.raises(GenerationError, match=r"after 2 attempt\(s\).*expected a JSON object"):
        generate_trait("jokey", "Makes jokes.", config(stub, "openai", attempts=2))
    assert len(stub.requests) == 2


def test_injected_client(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    import anthropic

    monkeypatch.delenv("ANTHROPIC_API_KEY")
    client = anthropic.Anthropic(api_key="injected-key", base_url=stub.url, max_retries=0)
    stub.queue(good_reply())
    generate_trait("jokey", "Makes jokes.", GenerationConfig(provider="anthropic"), client=client)
    assert "injected-key" in sent_key(stub.requests[0])


def test_api_key_only_from_env_and_never_logged(
    stub: Stub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(GenerationError, match="set the environment variable OPENAI_API_KEY"):
        generate_trait("jokey", "Makes jokes.", config(stub, "openai"))
    assert stub.requests == []
    caplog.set_level(logging.DEBUG)
    stub.queue("garbage", good_reply())
    generate_trait("jokey", "Makes jokes.", config(stub, "anthropic", attempts=2))
    assert "unusable reply" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_api_errors_are_redacted(stub: Stub, provider: str) -> None:
    stub.queue("", stop="401")
    with pytest.raises(GenerationError, match="API error.*401") as info:
        generate_trait("jokey", "Makes jokes.", config(stub, provider))
    assert "Incorrect API key provided: " in str(info.value)
    assert SECRET not in str(info.value) and "***" in str(info.value)


def test_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    # nothing listens on port 9 of 127.0.0.1
    cfg = GenerationConfig(provider="anthropic", base_url="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(GenerationError, match="Anthropic API error: Connection error"):
        generate_trait("jokey", "Makes jokes.", cfg)


def test_bad_arguments() -> None:
    with pytest.raises(GenerationError, match="not usable"):
        generate_trait("has space", "x", GenerationConfig())
    with pytest.raises(GenerationError, match="description is empty"):
        generate_trait("ok", "  ", GenerationConfig())


# --- parsing --------------------------------------------------------------------------------


def test_extract_json_tolerates_fences_and_prose() -> None:
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Here you go:\n{"a": {"b": 2}}\nHope it helps!') == {"a": {"b": 2}}
    with pytest.raises(ReplyError, match="invalid"):
        extract_json('{"a": 1,,}')


def test_parse_reply_trims_extras_and_accepts_paper_keys() -> None:
    cfg = GenerationConfig()
    s = load_trait("evil")
    data = {
        "instruction": [p.model_dump() for p in s.instructions] * 2,  # 10 pairs: cut to 5
        "questions": s.extraction_questions + s.evaluation_questions,  # one list: split 20/20
        "eval_prompt": s.rubric,
        "exemplars": s.exemplars.model_dump(),
    }
    spec = parse_reply(json.dumps(data), "cruel", "Cruel.", cfg)
    assert spec.instructions == s.instructions
    assert spec.evaluation_questions == s.evaluation_questions
    assert len(spec.exemplars.negative) == 40


def test_parse_reply_rejects_long_instructions_and_shared_questions() -> None:
    cfg = GenerationConfig()
    long = json.loads(good_reply())["instructions"]
    long[2]["neg"] = "word " * 50
    with pytest.raises(ReplyError, match=r"instructions\[2\]\.neg has 50 words"):
        parse_reply(good_reply(instructions=long), "x", "X.", cfg)
    ex = load_trait("humorous").extraction_questions
    with pytest.raises(ReplyError, match="disjoint"):
        parse_reply(good_reply(evaluation_questions=ex), "x", "X.", cfg)
    with pytest.raises(ReplyError, match="'exemplars' must be an object"):
        parse_reply(good_reply(exemplars=["a"]), "x", "X.", cfg)
    no_ex = parse_reply(good_reply(exemplars=None), "x", "X.", GenerationConfig(n_exemplars=0))
    assert no_ex.exemplars.positive == []


def test_prompt_states_the_contract() -> None:
    p = build_prompt("stubborn", "Refuses to change its mind.", GenerationConfig(n_questions=7))
    assert "TRAIT NAME: stubborn" in p and "Refuses to change its mind." in p
    assert "{question}" in p and "{answer}" in p and "REFUSAL" in p
    assert "7 questions each, 14 in" in p and "exactly 5 pairs" in p


# --- CLI ------------------------------------------------------------------------------------


def test_cli_new(stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "jokey.yaml"
    stub.queue("oops", good_reply())
    args = [
        "new",
        "jokey",
        "Makes jokes.",
        "--provider",
        "openai",
        "--model",
        "gpt-test",
        "--base-url",
        stub.url + "/v1",
        "--out",
        str(out),
        "--attempts",
        "2",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    assert TraitSpec.load(out).name == "jokey"
    assert SECRET not in res.output
    res = CliRunner().invoke(app, args)  # exists now
    assert res.exit_code == 1 and "--force" in res.output
    stub.queue("still not json")
    res = CliRunner().invoke(app, [*args[:-2], "--attempts", "1", "--force"])
    assert res.exit_code == 1 and "no valid trait spec after 1 attempt" in res.output
