"""Continuous batching on the default model: rows that end at different times, slots refilled,
the same greedy tokens per row as the fixed-batch path, steered and unsteered."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.bulk import bulk_generate
from pvlens.core.config import SamplingConfig

pytestmark = pytest.mark.integration

PROMPTS = [
    "What is the capital of France? One word.",
    "Give me one tip for staying focused while studying.",
    "Say hello.",
    "Write a short poem about the sea.",
    "What is 2 + 2?",
    "Name three colours.",
]


def test_bulk_rows_equal_generate_on_the_default_model():
    torch.set_num_threads(1)
    model = pvlens.load_model()
    greedy = SamplingConfig(max_new_tokens=24, temperature=0.0)
    ref = pvlens.generate(model, PROMPTS, max_new_tokens=24, progress=False)
    lengths = [c.response_len for c in ref.chats]
    assert len(set(lengths)) > 1 and any(ref.finished), f"rows must end at different times: {lengths}"
    got = bulk_generate(model, PROMPTS, greedy, batch_size=2)  # 2 slots: 4 refills
    assert [c.response_ids for c in got.chats] == [c.response_ids for c in ref.chats]
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    steer = pvlens.Steering(v / v.norm() * 8.0, pvlens.core.config.default_layer(model), 1.0, "response")
    ref_s = pvlens.generate(model, PROMPTS, steer=steer, max_new_tokens=24, progress=False)
    assert ref_s.texts != ref.texts
    got_s = bulk_generate(model, PROMPTS, greedy, steer=steer, batch_size=3)
    assert [c.response_ids for c in got_s.chats] == [c.response_ids for c in ref_s.chats]
