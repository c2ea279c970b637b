"""`pvlens serve`: the playground's routes, limits, streaming and queue on the tiny model."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import pvlens
from pvlens.errors import InputError
from pvlens.serve import ServeSettings, Session, create_app

PROMPT = "Tell me about your weekend."


@pytest.fixture(scope="module")
def vector() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 64)


@pytest.fixture(scope="module")
def session(tiny, vector) -> Session:
    s = Session(tiny, {"rand": vector, "other": -vector}, ServeSettings(max_prompt_tokens=80, max_new_tokens=32))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(session):
    with TestClient(create_app(session)) as c:
        yield c


def events(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def ask(client, alpha: float = 0.0, layer: int = 1, n: int = 12, **extra) -> list[dict]:
    body = {"prompt": PROMPT, "traits": [{"name": "rand", "alpha": alpha}], "layer": layer,
            "max_new_tokens": n, **extra}
    return events(client.post("/api/generate", json=body))


def test_page_and_config(client, session, vector, tiny):
    page = client.get("/")
    assert page.status_code == 200 and "pvlens playground" in page.text
    cfg = client.get("/api/config").json()
    assert cfg["n_layers"] == 2 and cfg["default_layer"] == 1
    rand = next(t for t in cfg["traits"] if t["name"] == "rand")
    for layer in (0, 1):  # |α|max = max_push · residual norm / ‖v_L‖
        assert rand["alpha_max"][layer] == pytest.approx(session.norms[layer] / float(vector[layer].norm()))
    assert all(n > 0 for n in session.norms)


def test_alpha_zero_equals_unsteered_and_nonzero_differs(client, session):
    done = ask(client, alpha=0.0)[-1]
    assert done["type"] == "done" and done["steered"] == done["unsteered"] and done["unsteered"]
    top = session.alpha_max("rand", 1)
    steered = ask(client, alpha=top)[-1]
    assert steered["unsteered"] == done["unsteered"]
    assert steered["steered"] != steered["unsteered"]


def test_streamed_replies_equal_one_shot_generation(client, session, tiny, vector):
    alpha = 0.6 * session.alpha_max("rand", 1)
    evs = ask(client, alpha=alpha, n=10)
    texts = [e for e in evs if e["type"] == "text"]
    assert {e["side"] for e in texts} == {"unsteered", "steered"} and len(texts) > 2  # streamed in chunks
    done = evs[-1]
    plain = pvlens.generate(tiny, [PROMPT], temperature=0, max_new_tokens=10, progress=False)
    steer = pvlens.Steering(vector[1], 1, alpha, "response")
    steered = pvlens.generate(tiny, [PROMPT], steer=steer, temperature=0, max_new_tokens=10, progress=False)
    assert done["unsteered"] == plain.texts[0]
    assert done["steered"] == steered.texts[0]


def test_projections_are_centred_on_the_unsteered_reply(client):
    evs = ask(client, alpha=3.0)
    proj = next(e for e in evs if e["type"] == "projections")
    done = evs[-1]
    assert proj["trait"] == "rand" and proj["layer"] == 1 and proj["scale"] > 0
    base = [v for _, v in proj["unsteered"]]
    assert sum(base) / len(base) == pytest.approx(0.0, abs=1e-4)
    assert "".join(t for t, _ in proj["steered"]).strip() == done["steered"]
    assert max(abs(v) for side in ("unsteered", "steered") for _, v in proj[side]) == pytest.approx(proj["scale"])


def test_colour_trait_and_several_traits(client):
    body = {"prompt": PROMPT, "layer": 0, "max_new_tokens": 6, "colour_trait": "other",
            "traits": [{"name": "rand", "alpha": 1.0}, {"name": "other", "alpha": 1.0}]}
    evs = events(client.post("/api/generate", json=body))
    proj = next(e for e in evs if e["type"] == "projections")
    assert proj["trait"] == "other" and proj["layer"] == 0
    # rand and other = -rand at the same α cancel: the steered reply is the unsteered one
    assert evs[-1]["steered"] == evs[-1]["unsteered"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"prompt": "   "}, 400, "prompt is empty"),
        ({"prompt": "word " * 120}, 400, "the limit is 80"),
        ({"traits": [{"name": "nope", "alpha": 1}]}, 400, "unknown trait 'nope'"),
        ({"traits": [{"name": "rand", "alpha": 1e6}]}, 400, "out of range"),
        ({"traits": [{"name": "rand", "alpha": -1e6}]}, 400, "out of range"),
        ({"traits": [{"name": "rand", "alpha": None}]}, 422, "traits.0.alpha"),
        ({"traits": []}, 422, "traits"),
        ({"traits": [{"name": "rand", "alpha": 1}, {"name": "rand", "alpha": 2}]}, 400, "twice"),
        ({"layer": 2}, 400, "layer 2 is out of range"),
        ({"layer": -1}, 400, "layer -1 is out of range"),
        ({"max_new_tokens": 0}, 400, "max_new_tokens"),
        ({"max_new_tokens": 33}, 400, "between 1 and 32"),
        ({"colour_trait": "other"}, 400, "colour_trait"),
        ({"extra": 1}, 422, "extra"),
    ],
)
def test_bad_input_is_a_clear_message(client, body, status, words):
    full = {"prompt": PROMPT, "traits": [{"name": "rand", "alpha": 0.5}], "layer": 1, **body}
    r = client.post("/api/generate", json=full)
    assert r.status_code == status
    assert words in r.json()["error"] and "Traceback" not in r.text


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_alpha_is_refused(client, number):
    raw = '{"prompt": "hi", "layer": 1, "traits": [{"name": "rand", "alpha": ALPHA}]}'.replace("ALPHA", number)
    r = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["error"]


def test_not_json_is_a_clear_message(client):
    r = client.post("/api/generate", content="{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()


def test_requests_queue_one_at_a_time(client, session, monkeypatch):
    calls: list[tuple[int, float, float]] = []
    active = {"now": 0, "max": 0}
    first_started = threading.Event()
    original = session.continue_reply

    def slow(plan, reply, steered):
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        start = time.perf_counter()
        first_started.set()
        time.sleep(0.02)
        try:
            return original(plan, reply, steered)
        finally:
            active["now"] -= 1
            calls.append((id(plan), start, time.perf_counter()))

    monkeypatch.setattr(session, "continue_reply", slow)
    results: dict[str, list[dict]] = {}
    first = threading.Thread(target=lambda: results.__setitem__("a", ask(client, alpha=1.0, n=8)))
    first.start()
    assert first_started.wait(30)
    second = ask(client, alpha=0.0, n=8)
    first.join(60)
    assert second[0] == {"type": "queued", "ahead": 1}
    assert results["a"][-1]["type"] == "done" and second[-1]["type"] == "done"
    assert active["max"] == 1
    by_plan: dict[int, list[tuple[float, float]]] = {}
    for key, start, end in calls:
        by_plan.setdefault(key, []).append((start, end))
    (a, b) = sorted(by_plan.values(), key=lambda spans: spans[0][0])
    assert max(end for _, end in a) <= min(start for start, _ in b)  # whole requests, not interleaved


def test_judge_scores_when_asked(tiny, vector):
    class FixedJudge:
        def score(self, question: str, answer: str) -> float:
            return float(len(answer) % 100)

    def factory(trait: str):
        if trait == "other":
            raise ValueError("not a known trait")
        return FixedJudge()

    s = Session(tiny, {"rand": vector, "other": vector}, judge_factory=factory)
    with TestClient(create_app(s)) as c:
        body = {"prompt": PROMPT, "layer": 1, "max_new_tokens": 5, "judge": True,
                "traits": [{"name": "rand", "alpha": 1.0}, {"name": "other", "alpha": 0.0}]}
        evs = events(c.post("/api/generate", json=body))
        assert not any(e["type"] == "judge" for e in ask(c, n=3))  # only when asked
    s.close()
    judged = next(e for e in evs if e["type"] == "judge")
    done = evs[-1]
    assert judged["scores"] == {"rand": {"unsteered": len(done["unsteered"]) % 100,
                                         "steered": len(done["steered"]) % 100}}
    assert "no judge for 'other'" in judged["notes"][0]


def test_generation_failure_is_an_error_event(tiny, vector, monkeypatch):
    s = Session(tiny, {"rand": vector})

    def broken(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(s, "continue_reply", broken)
    with TestClient(create_app(s)) as c:
        evs = ask(c)
    s.close()
    assert evs[-1] == {"type": "error", "message": "generation failed: RuntimeError: out of memory"}


def test_vectors_must_fit_the_model(tiny):
    with pytest.raises(InputError, match="d_model 32"):
        Session(tiny, {"small": torch.randn(2, 32)})
    with pytest.raises(ValueError, match="one vector per layer"):
        Session(tiny, {"deep": torch.randn(5, 64)})
    with pytest.raises(InputError, match="at least one"):
        Session(tiny, {})


def test_cli_checks_arguments_before_loading_a_model(tmp_path):
    from pvlens.cli import app

    runner = CliRunner(env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    r = runner.invoke(app, ["serve", "--vectors", "no-equals-sign"])
    assert r.exit_code == 2 and "NAME=PATH" in r.output
    r = runner.invoke(app, ["serve", "--vectors", f"x={tmp_path / 'missing'}"])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["serve", "--no-builtin"])
    assert r.exit_code == 2 and "no vectors" in r.output
    r = runner.invoke(app, ["serve", "--max-push", "nan"])
    assert r.exit_code == 2 and "finite" in r.output


def test_colour_view_of_an_empty_reply_uses_the_last_prompt_token(session):
    from pvlens.serve import SteerRequest

    plan = session.plan(SteerRequest(prompt=PROMPT, traits=[{"name": "rand", "alpha": 1.0}], layer=1))
    view = session.colour_view(plan, {"unsteered": [], "steered": [100, 200]})
    last_prompt = session.reply_projections(plan, [])[1]
    assert view["unsteered"] == [] and view["baseline"] == pytest.approx(last_prompt[0])
    assert len(view["steered"]) == 2 and view["scale"] > 0
