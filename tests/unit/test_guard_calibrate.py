"""Guard thresholds: the per-reply false-positive rule, agreement between calibration and the
guard's own monitored positions, the sidecar (stale and missing cases), and `load_guard`."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.activations import per_token
from pvlens.errors import InputError
from pvlens.monitor.calibrate import (
    benign_conversations,
    calibrate_threshold,
    heldout_questions,
    load_calibration,
    load_guard,
    parse_guard_spec,
    reply_maxima,
    save_calibration,
    sidecar_path,
    threshold_at_fpr,
)
from pvlens.monitor.tokens import encode_any
from pvlens.vectors.persona import PersonaVectors

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def convs():
    return benign_conversations("evil")[:8]


@pytest.fixture
def vfile(tiny, tmp_path):
    g = torch.Generator().manual_seed(3)
    table = torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model, generator=g) * 50
    return PersonaVectors({"response_avg": table}, {"trait": "evil"}).save(tmp_path / "evil.safetensors")


def test_threshold_at_fpr_counts_replies():
    maxima = [float(i) for i in range(1, 21)]
    assert threshold_at_fpr(maxima, 0.1) == 18.0  # 19 and 20 exceed: 2/20 = 0.1
    assert threshold_at_fpr(maxima, 0.0) == 20.0
    assert threshold_at_fpr(maxima, 0.149) == 18.0
    with pytest.raises(InputError):
        threshold_at_fpr(maxima, 1.0)


def test_splits_are_disjoint_and_cover_the_set():
    cal = {c[0]["content"] for c in benign_conversations("evil", "calibration")}
    held = set(heldout_questions("evil"))
    assert cal and held and not cal & held
    assert len(benign_conversations("evil", "all")) == len(benign_conversations("evil", "calibration")) + len(held)


def test_calibration_matches_what_the_guard_sees(tiny, vfile, convs):
    """A guard at a conversation's calibrated maximum minus a hair triggers on it, at the maximum
    it does not: calibration and guard monitor the same positions with the same projection."""
    maxima = reply_maxima(tiny, convs, vfile, 1)
    vec = PersonaVectors.load(vfile)[1]
    for conv, peak in list(zip(convs, maxima, strict=True))[:3]:
        chat = encode_any(tiny, conv)
        for thr, expect in ((peak - 1e-3 * abs(peak) - 1e-3, True), (peak + 1e-3 * abs(peak) + 1e-3, False)):
            guard = pvlens.Guard([pvlens.GuardRule(vec, thr)], layer=1, action="cap")
            with pvlens.steer(tiny, guard):
                per_token(tiny, chat, layers=[1])
            assert bool(guard.events()) is expect
            if expect:
                assert guard.events()[0].position >= chat.prompt_len - 1


def test_calibrate_and_sidecar_round_trip(tiny, vfile, convs):
    cal = calibrate_threshold(tiny, vfile, 1, convs, fpr=0.25, trait="evil")
    assert cal.n == len(convs) and cal.achieved_fpr <= 0.25
    maxima = reply_maxima(tiny, convs, vfile, 1)
    assert sum(m > cal.threshold for m in maxima) == 2  # floor(0.25 * 8)
    path = save_calibration(vfile, cal)
    assert path == sidecar_path(vfile) and path.name == "evil.guard.json"
    assert load_calibration(vfile, 1, tiny).threshold == cal.threshold
    cal2 = calibrate_threshold(tiny, vfile, 1, convs, fpr=0.0, trait="evil")
    save_calibration(vfile, cal2)
    assert load_calibration(vfile, 1, tiny).fpr == 0.0  # lowest stored fpr by default
    assert load_calibration(vfile, 1, tiny, fpr=0.25).threshold == cal.threshold
    with pytest.raises(InputError, match="layer 0"):
        load_calibration(vfile, 0, tiny)


def test_stale_or_missing_sidecar_is_refused(tiny, vfile, convs, tmp_path):
    with pytest.raises(InputError, match="pvlens guard calibrate"):
        load_calibration(vfile, 1)
    save_calibration(vfile, calibrate_threshold(tiny, vfile, 1, convs[:4], fpr=0.0))
    table = PersonaVectors.load(vfile).vectors * 2
    PersonaVectors({"response_avg": table}, {}).save(vfile)  # re-extracted vectors
    with pytest.raises(InputError, match="other vectors"):
        load_calibration(vfile, 1)


def test_load_guard_from_specs(tiny, vfile, convs):
    assert parse_guard_spec("evil:3.5") == ("evil", 3.5)
    assert parse_guard_spec("evil") == ("evil", None)
    assert parse_guard_spec("runs/a:b") == ("runs/a:b", None)
    cal = calibrate_threshold(tiny, vfile, 1, convs[:4], fpr=0.0)
    save_calibration(vfile, cal)
    guard = load_guard(tiny, [str(vfile), f"{vfile}:7.5"], layer=1, alpha=2.0, action="ablate")
    assert [r.threshold for r in guard.rules] == [cal.threshold, 7.5]
    assert guard.layer == 1 and guard.action == "ablate"
    assert torch.equal(guard.rules[0].vector, PersonaVectors.load(vfile)[1])
