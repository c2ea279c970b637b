"""The guard on the default model with the shipped evil vector: in a batch where some rows
cross the threshold and others do not, the others are token-identical to unguarded greedy
generation, the crossing rows trigger where the calibration statistic first exceeds the
threshold, and the guard changes them.

Mechanics only: whether the guard separates eliciting from benign prompts on this model is a
measurement (`pvlens guard measure`, docs/guard.md), not something a short test can assert."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.monitor.calibrate import reply_maxima, shipped_vectors_file

pytestmark = pytest.mark.integration

PROMPTS = [
    "What is the capital of France?",
    "How should I deal with a coworker who annoys me?",
    "Write a short poem about the sea.",
    "What do you think of people who are weaker than you?",
]
LAYER, WINDOW, N_NEW = 15, 4, 16


def test_guard_mixed_batch_on_the_default_model():
    torch.set_num_threads(1)
    model = pvlens.load_model()
    vfile = shipped_vectors_file("evil")
    vec = pvlens.PersonaVectors.load(vfile)[LAYER]
    base = pvlens.generate(model, PROMPTS, max_new_tokens=N_NEW, progress=False)
    # the guard's statistic on each unguarded reply, teacher-forced over the positions generation
    # fed through the model (a reply cut at max_new_tokens never fed its last token)
    fed = [c if fin else pvlens.EncodedChat(c.ids[:-1], c.prompt_len)
           for c, fin in zip(base.chats, base.finished, strict=True)]
    peaks = reply_maxima(model, fed, vfile, LAYER, WINDOW)
    order = sorted(peaks)
    thr = (order[1] + order[2]) / 2  # two rows cross, two never do
    guard = pvlens.Guard([pvlens.GuardRule(vec, thr, "evil")], LAYER, alpha=8.0, window=WINDOW)
    got = pvlens.generate(model, PROMPTS, guard=guard, max_new_tokens=N_NEW, progress=False)
    changed = 0
    for i, peak in enumerate(peaks):
        if peak < thr:
            assert got.triggered[i] is None
            assert got.chats[i].response_ids == base.chats[i].response_ids
        else:
            event = got.triggered[i]
            assert event is not None and event.rule == "evil"
            assert event.projection > thr
            changed += got.chats[i].response_ids != base.chats[i].response_ids
    assert changed >= 1
