"""Extraction on the default model with the offline judge (small sizes)."""

from __future__ import annotations

import json

import pytest
import torch

import pvlens
from pvlens.core.activations import collect
from pvlens.core.chat import encode_prompt
from pvlens.traits import load_trait
from pvlens.vectors.extract import ExtractConfig, extract

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model():
    return pvlens.load_model()


def test_evil_extraction_small(model, tmp_path):
    evil = load_trait("evil")
    cfg = ExtractConfig.preset(
        "cpu", samples_per_pair=1, n_questions=8, n_instructions=3, max_new_tokens=40,
        min_kept=4, pairing="sample", trait_threshold=35.0,
    )
    # At this size (40-token answers, 3 instructions) the 135M model rarely passes the default
    # threshold of 50: one run kept 3/24 evil answers (scores 59, 69, 88). 35 keeps ~9 and still
    # tests the whole pipeline; the full cpu preset keeps 49/300 per polarity at 50.
    vecs = extract(model, evil, tmp_path, cfg=cfg)
    counts = vecs.metadata["counts"]
    print("counts", counts)
    assert counts["pos_total"] == counts["neg_total"] == 24
    assert vecs.vectors.shape == (30, 576) and torch.isfinite(vecs.vectors).all()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["judge"]["kind"] == "offline" and manifest["timings"]["generate_s"] > 0

    # held out: evaluation questions (never used for extraction) under the pos / neg system
    # prompts; the last prompt token projects higher onto the vector under the evil prompt
    layer = 15
    unit = vecs[layer] / vecs[layer].norm()
    qs = evil.evaluation_questions[:8]
    chats = {pol: [encode_prompt(model.tokenizer, q, evil.system_prompt(pol, 0)) for q in qs]
             for pol in ("pos", "neg")}
    proj = {pol: collect(model, c, ("last_prompt",), layers=[layer], progress=False)["last_prompt"][:, 0] @ unit
            for pol, c in chats.items()}
    print("held-out last-prompt projections pos", proj["pos"].mean().item(), "neg", proj["neg"].mean().item())
    assert proj["pos"].mean() > proj["neg"].mean()


def test_tiny_preset_runs_on_the_default_model(model, tmp_path):
    """The smoke-test preset must complete on the weak default model (it kept 0 of 8 positive
    rollouts under the pair rule before): per-sample filtering at threshold 35 keeps a few."""
    vecs = extract(model, load_trait("evil"), tmp_path, cfg=ExtractConfig.preset("tiny"))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert vecs.n_layers == model.cfg.n_layers
    assert torch.isfinite(vecs.vectors).all() and vecs.vectors.norm() > 0
    kept = manifest.get("kept") or manifest.get("counts") or {}
    assert kept, manifest.keys()
