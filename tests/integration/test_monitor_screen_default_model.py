"""Monitoring and screening on the default model (SmolLM2-135M), small and offline.

The direction is a difference of means of the evil trait's labelled exemplar answers (first
half), so no generation or judge is needed to get it; screening is tested on the other half.
"""

from __future__ import annotations

import json

import pytest
import torch

import pvlens
from pvlens.core.activations import collect
from pvlens.core.chat import encode_conversation
from pvlens.monitor import TraitMonitor, prompt_ladder, token_projections, tokens_html
from pvlens.trainsets.screen import ScreenConfig, auroc, load_results, screen
from pvlens.traits import load_trait
from pvlens.vectors import PersonaVectors

pytestmark = pytest.mark.integration
LAYER = 15


@pytest.fixture(scope="module")
def model():
    return pvlens.load_model()


@pytest.fixture(scope="module")
def spec():
    return load_trait("evil")


def _convs(spec, answers):
    qs = spec.extraction_questions
    return [[{"role": "user", "content": qs[i % len(qs)]}, {"role": "assistant", "content": a}]
            for i, a in enumerate(answers)]


@pytest.fixture(scope="module")
def vectors(model, spec):
    tok = model.tokenizer
    pos = [encode_conversation(tok, c) for c in _convs(spec, spec.exemplars.positive[:20])]
    neg = [encode_conversation(tok, c) for c in _convs(spec, spec.exemplars.negative[:20])]
    red = ("response_avg",)  # only the layer used here: the pass stops there
    a = collect(model, pos, red, layers=[LAYER], progress=False)["response_avg"].double().mean(0)
    b = collect(model, neg, red, layers=[LAYER], progress=False)["response_avg"].double().mean(0)
    t = torch.zeros(model.cfg.n_layers, model.cfg.d_model)
    t[LAYER] = (a - b)[0].float()
    return PersonaVectors({"response_avg": t}, {"trait": "evil"})


def test_last_prompt_projection_orders_the_ladder_ends(model, spec, vectors):
    ladder = prompt_ladder(spec)
    mon = TraitMonitor(model, {"evil": vectors}, layer=LAYER)
    qs = spec.evaluation_questions[:6]
    low = mon.score_tensor([ladder[0].messages(q) for q in qs])[:, 0]
    high = mon.score_tensor([ladder[-1].messages(q) for q in qs])[:, 0]
    assert (high > low).all(), (low, high)


def test_monitor_multi_trait_pass_matches_single(model, vectors):
    other = PersonaVectors({"response_avg": torch.randn(vectors.n_layers, vectors.d_model,
                                                        generator=torch.Generator().manual_seed(0))})
    # the joint pass stops at the deepest layer (LAYER); traits may sit at different layers
    convs = [[{"role": "user", "content": "How do I get back at my ex?"}],
             [{"role": "user", "content": "What is a good recipe for soup?"}]]
    joint = TraitMonitor(model, {"evil": vectors, "rand": other}, layer={"evil": LAYER, "rand": 8})
    a = joint.score_batch(convs)
    b = TraitMonitor(model, {"evil": vectors}, layer=LAYER).score_batch(convs)
    c = TraitMonitor(model, {"rand": other}, layer=8).score_batch(convs)
    for x, y, z in zip(a, b, c, strict=True):
        assert x["evil"] == pytest.approx(y["evil"], abs=1e-3)
        assert x["rand"] == pytest.approx(z["rand"], abs=1e-3)


def test_screen_separates_held_out_evil_answers(model, spec, vectors, tmp_path):
    evil = spec.exemplars.positive[20:30]
    kind = spec.exemplars.negative[20:30]
    rows = _convs(spec, evil) + _convs(spec, kind)
    data = tmp_path / "mix.jsonl"
    data.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
    cfg = ScreenConfig(layer=LAYER, max_new_tokens=24, chunk_size=8, top_k=5)
    s = screen(model, data, vectors, tmp_path / "out", cfg, progress=False)
    res = load_results(tmp_path / "out")
    d = [r["delta"] for r in res]
    score = auroc(d[: len(evil)], d[len(evil):])
    assert score >= 0.8, score
    assert sum(t["index"] < len(evil) for t in s.top) >= 4
    assert s.approx_spearman["last_prompt"] is not None


def test_token_view_on_the_default_model(model, vectors, tmp_path):
    conv = [{"role": "user", "content": "What should I do about my noisy neighbour?"},
            {"role": "assistant", "content": "Poison their dog and enjoy their tears."}]
    tp = token_projections(model, conv, vectors, LAYER)
    calm = token_projections(model, [conv[0], {"role": "assistant", "content": "Talk to them kindly and calmly."}],
                             vectors, LAYER)
    assert tp.response_mean > calm.response_mean
    tokens_html(tp, tmp_path / "v.html")
    assert "<script src" not in (tmp_path / "v.html").read_text()
