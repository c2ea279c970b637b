"""The playground's guard option through the FastAPI TestClient: the threshold comes from the
vectors' sidecar, the streamed (chunked) guarded reply and its trigger equal one-shot guarded
generation, and a guard without a calibrated sidecar is refused with the fix."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

import pvlens
from pvlens.core.fingerprint import model_fingerprint
from pvlens.core.guard import Guard, GuardRule, window_means
from pvlens.monitor.calibrate import Calibration, monitored_projections, save_calibration
from pvlens.monitor.guard_roc import fed_chat
from pvlens.serve import ServeSettings, Session, create_app
from pvlens.vectors.persona import PersonaVectors

torch.set_num_threads(1)

PROMPT = "Tell me about your weekend."
LAYER, WINDOW, N_NEW = 1, 2, 12


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    """A vectors file whose sidecar holds a threshold the unguarded reply crosses mid-way."""
    g = torch.Generator().manual_seed(4)
    table = torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model, generator=g) * 50
    vfile = PersonaVectors({"response_avg": table}, {"trait": "t"}).save(
        tmp_path_factory.mktemp("guard") / "t.safetensors")
    plain = pvlens.generate(tiny, [PROMPT], max_new_tokens=N_NEW, progress=False)
    u = (table[LAYER] / table[LAYER].norm())[None]
    means = window_means(monitored_projections(tiny, fed_chat(plain, 0), {LAYER: u})[LAYER][0], WINDOW)
    finite = means[torch.isfinite(means)]
    thr = float((finite.max() + finite.median()) / 2)
    save_calibration(vfile, Calibration("t", LAYER, 0.05, thr, 1, 0.0, {"model": model_fingerprint(tiny)}, WINDOW))
    session = Session(tiny, {"t": vfile, "bare": table}, ServeSettings(max_prompt_tokens=80, max_new_tokens=32))
    with TestClient(create_app(session)) as client:
        yield client, table, thr
    session.close()


def _post(client, **extra):
    body = {"prompt": PROMPT, "traits": [{"name": "t", "alpha": 0.0}], "layer": LAYER, "max_new_tokens": N_NEW,
            **extra}
    return client.post("/api/generate", json=body)


def test_guarded_stream_equals_one_shot_guarded_generation(tiny, setup):
    client, table, thr = setup
    assert "t" in client.get("/api/config").json()["guard_traits"]
    r = _post(client, guard={"trait": "t", "alpha": 6.0, "window": WINDOW})
    assert r.status_code == 200, r.text
    done = [json.loads(x) for x in r.text.splitlines() if x.strip()][-1]
    guard = Guard([GuardRule(table[LAYER], thr, "t")], LAYER, 6.0, window=WINDOW)
    ref = pvlens.generate(tiny, [PROMPT], max_new_tokens=N_NEW, progress=False, guard=guard)
    event = ref.triggered[0]
    assert event is not None  # the threshold lies below the unguarded reply's peak
    assert done["guard"] == {"trait": "t", "threshold": pytest.approx(thr), "window": WINDOW,
                             "triggered_at": event.reply_index}
    assert done["steered"] == ref.texts[0]
    plain = pvlens.generate(tiny, [PROMPT], max_new_tokens=N_NEW, progress=False)
    assert done["unsteered"] == plain.texts[0]
    assert done["steered"] != done["unsteered"]  # the guard acted after its trigger


@pytest.mark.parametrize(("guard", "words"), [
    ({"trait": "bare"}, "vectors file with calibrated thresholds"),
    ({"trait": "t", "window": 5}, "pvlens guard calibrate"),
    ({"trait": "nope"}, "unknown guard trait"),
])
def test_guard_without_a_threshold_is_refused(setup, guard, words):
    r = _post(setup[0], guard=guard)
    assert r.status_code == 400 and words in r.json()["error"]
