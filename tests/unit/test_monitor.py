"""Monitoring on the tiny random model with random vectors: projection maths, the one-pass
multi-trait monitor, the prompt-shift experiment plumbing, the offline per-token views."""

from __future__ import annotations

import json
import re

import pytest
import torch

import pvlens
from pvlens.core.activations import collect, per_token
from pvlens.core.chat import encode_conversation, encode_messages
from pvlens.monitor import (
    PromptShiftConfig,
    TraitMonitor,
    many_shot,
    project,
    projections,
    prompt_ladder,
    prompt_shift,
    token_projections,
    tokens_html,
    tokens_png,
    unit_direction,
)
from pvlens.traits import load_trait
from pvlens.vectors import PersonaVectors

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return pvlens.tiny_model(n_layers=3)


def _vecs(model, seed: int) -> PersonaVectors:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g) * 3
    return PersonaVectors({"response_avg": t}, {"trait": f"t{seed}"})


MSGS = [{"role": "user", "content": "How should I treat my rivals?"},
        {"role": "assistant", "content": "With fairness and patience."}]


def test_project_is_dot_with_unit_vector_and_cosine_is_bounded():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(5, 7, generator=g), torch.randn(7, generator=g) * 10
    p = project(x, v)
    assert torch.allclose(p, x @ (v / v.norm()), atol=1e-5)
    c = project(x, v, cosine=True)
    assert torch.allclose(c, torch.nn.functional.cosine_similarity(x, v[None], dim=-1), atol=1e-5)
    assert torch.allclose(project(2 * x, v), 2 * p, atol=1e-5)  # linear in x, not in |v|
    assert torch.allclose(project(x, 5 * v), p, atol=1e-5)


def test_unit_direction_rejects_zero_vector_and_needs_layer():
    z = PersonaVectors({"response_avg": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="zero"), pytest.warns(UserWarning, match="zero"):
        unit_direction(z, 0)
    with pytest.raises(ValueError, match="layer"):
        unit_direction(PersonaVectors({"response_avg": torch.ones(2, 4)}))


def test_projections_match_collect_then_dot(model):
    v = _vecs(model, 1)
    chats = [encode_conversation(model.tokenizer, MSGS),
             encode_conversation(model.tokenizer, [MSGS[0], {"role": "assistant", "content": "No."}])]
    got = projections(model, chats, v, layer=1, reductions=("last_prompt", "response_avg"))
    acts = collect(model, chats, ("last_prompt", "response_avg"), progress=False)
    u = v[1] / v[1].norm()
    for r in got:
        assert torch.allclose(got[r], acts[r][:, 1] @ u, atol=1e-4)


def test_monitor_one_pass_equals_separate_calls(model):
    a, b, c = _vecs(model, 1), _vecs(model, 2), _vecs(model, 3)
    mon = TraitMonitor(model, {"a": a, "b": b, "c": c}, layer={"a": 0, "b": 2, "c": 0})
    convs = [MSGS[:1], MSGS, [{"role": "user", "content": "Hi there, what is two plus two?"}]]
    # one forward per batch: count engine forwards through a hook on the first block
    calls = []
    h = model.blocks[0].hook_resid_post.add_hook(lambda x, hook: calls.append(x.shape[0]))
    try:
        joint = mon.score_batch(convs)
    finally:
        model.reset_hooks()
    assert sum(calls) == len(convs), "all traits must come from one pass over the batch"
    del h
    for name, vec, layer in (("a", a, 0), ("b", b, 2), ("c", c, 0)):
        single = TraitMonitor(model, {name: vec}, layer=layer).score_batch(convs)
        for j, s in zip(joint, single, strict=True):
            assert j[name] == pytest.approx(s[name], rel=1e-4, abs=1e-4)  # fp32: batch make-up changes rounding
    # and the score is the last-prompt-token projection
    chat = encode_messages(model.tokenizer, MSGS[:1])
    resid = per_token(model, chat, layers=[2])[0]
    assert joint[0]["b"] == pytest.approx(float(project(resid[-1], b[2])), abs=1e-3)
    assert mon.score(MSGS[0]["content"]) == pytest.approx(joint[0], rel=1e-4, abs=1e-4)


def test_monitor_stops_at_deepest_needed_layer(model):
    seen = []
    for layer in range(model.cfg.n_layers):
        model.blocks[layer].hook_resid_post.add_hook(lambda x, hook, i=layer: seen.append(i))
    try:
        TraitMonitor(model, {"a": _vecs(model, 1)}, layer=1).score(MSGS[0]["content"])
    finally:
        model.reset_hooks()
    assert max(seen) == 1


def test_monitor_errors_are_clear(model):
    with pytest.raises(IndexError, match="out of range"):
        TraitMonitor(model, {"a": _vecs(model, 1)}, layer=99)
    with pytest.raises(ValueError, match="response_avg"):
        TraitMonitor(model, {"a": _vecs(model, 1)}, layer=0, reduction="response_avg").score("hi")
    with pytest.raises(ValueError, match="at least one"):
        TraitMonitor(model, {})


def test_monitor_loads_paths_and_default_layer(model, tmp_path):
    v = _vecs(model, 4)
    v.save(tmp_path / "vectors.safetensors")
    mon = TraitMonitor(model, {"x": tmp_path})
    assert mon.layers["x"] == model.cfg.n_layers // 2
    v2 = PersonaVectors(v.tensors, {"trait": "x", "layer": 0})
    v2.save(tmp_path / "b.safetensors")
    assert TraitMonitor(model, {"x": tmp_path / "b.safetensors"}).layers["x"] == 0


def test_ladders_and_shots():
    for trait in ("evil", "sycophantic", "hallucinating", "humorous"):
        ladder = prompt_ladder(trait)
        assert len(ladder) == 8 and len({c.system for c in ladder}) == 8
        shots = many_shot(trait)
        assert [len(c.history) // 2 for c in shots] == [0, 1, 2, 4, 8]
        assert all(m["role"] in ("user", "assistant") for c in shots for m in c.history)
    spec = load_trait("evil")
    shot_qs = {m["content"] for m in many_shot(spec)[-1].history if m["role"] == "user"}
    assert not shot_qs & set(spec.evaluation_questions)
    # the generated ladder (no data file) runs from neg to pos instructions
    gen = prompt_ladder("humorous")
    h = load_trait("humorous")
    assert h.instructions[0].neg in gen[0].system and h.instructions[0].pos in gen[-1].system


class ConstJudge:
    """Scores by the length of the answer (deterministic, no model)."""

    def score_many(self, pairs):
        return [float(len(a) % 100) for _, a in pairs]

    def coherence_many(self, pairs):
        return [80.0] * len(pairs)

    def describe(self):
        return {"kind": "const"}


def test_prompt_shift_runs_and_resumes(model, tmp_path):
    cfg = PromptShiftConfig(n_questions=2, samples=1, max_new_tokens=4, shots=(0, 2))
    v = _vecs(model, 5)
    res = prompt_shift(model, "evil", v, 1, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False)
    assert len(res.conditions) == 10
    assert (tmp_path / "prompt_shift.png").stat().st_size > 1000
    lines = (tmp_path / "prompt_shift.jsonl").read_text().splitlines()
    assert len(lines) == 10
    # projections are last-prompt-token projections of the condition's prompt
    rec = json.loads(lines[0])
    cond = prompt_ladder("evil")[0]
    chat = encode_messages(model.tokenizer, cond.messages(rec["questions"][0]["question"]))
    expect = project(per_token(model, chat, layers=[1])[0][-1], v[1])
    assert rec["questions"][0]["projection"] == pytest.approx(float(expect), abs=1e-3)
    # resume: drop the last record, rerun, same result and no duplicate lines
    (tmp_path / "prompt_shift.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    res2 = prompt_shift(model, "evil", v, 1, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False)
    assert res2.conditions == res.conditions


def test_token_view_html_is_self_contained(model, tmp_path):
    tp = token_projections(model, MSGS, _vecs(model, 6), layer=2)
    chat = encode_conversation(model.tokenizer, MSGS)
    assert len(tp.tokens) == len(tp.values) == len(chat.ids)
    assert "".join(tp.tokens) == model.tokenizer.decode(chat.ids)
    path = tmp_path / "t.html"
    view = tokens_html(tp, path)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "CircuitsVis.render" in text
    assert "ColoredTokens" in text and len(text) > 100_000  # the JS bundle is inlined
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"""(import|from)\s*\(?\s*["']https?://""", text)
    assert "unpkg.com" not in text
    assert view._repr_html_() in text
    png = tokens_png(tp, tmp_path / "t.png")
    assert png.stat().st_size > 1000


def test_prompt_shift_resumes_and_refuses_other_inputs(model, tmp_path):
    from pvlens.io.runs import StaleRunError

    cfg = PromptShiftConfig(n_questions=1, samples=1, max_new_tokens=2, shots=(), ladder=True)
    v = _vecs(model, 7)
    res = prompt_shift(model, "evil", v, 1, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False)
    log = tmp_path / "prompt_shift.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 8
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # a kill mid-write
    again = prompt_shift(model, "evil", v, 1, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False)
    assert again.conditions == res.conditions and len(log.read_text().splitlines()) == 8
    with pytest.raises(StaleRunError, match="layer"):
        prompt_shift(model, "evil", v, 2, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False)
    with pytest.raises(StaleRunError, match="direction"):
        prompt_shift(model, "evil", _vecs(model, 8), 1, tmp_path, judge=ConstJudge(), cfg=cfg,
                     progress=False)
    with pytest.raises(StaleRunError, match="config.seed"):
        prompt_shift(model, "evil", v, 1, tmp_path, judge=ConstJudge(), cfg=cfg.changed(seed=3),
                     progress=False)
    other = prompt_shift(model, "evil", v, 2, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False,
                         overwrite=True)
    assert other.layer == 2 and len(log.read_text().splitlines()) == 8


def test_monitor_names_stay_importable_from_their_old_home():
    import pvlens.monitor as mon
    from pvlens.traits import prompts

    assert mon.prompt_ladder is prompts.prompt_ladder and mon.many_shot is prompts.many_shot
    assert mon.trait_shots is prompts.trait_shots and mon.Condition is prompts.Condition
    for name in ("as_vectors", "default_layer", "TokenView", "TokenProjections", "LADDER_DIR",
                 "summarise_prompt_shift", "plot_prompt_shift", "PromptShiftResult", "VectorsLike"):
        assert hasattr(mon, name)


# --- the CLI: arguments and files are checked before the model loads ------------------------
def test_cli_checks_inputs_before_loading_the_model(model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pvlens.cli import app

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(pvlens, "load_model", no_model)
    vec = tmp_path / "v.safetensors"
    _vecs(model, 1).save(vec)
    runner = CliRunner()
    cases = [
        (["monitor", "score", "hi", "-v", str(tmp_path / "missing.safetensors")], "does not exist"),
        (["monitor", "score", "hi", "-v", f"a={vec}", "--reduction", "mean"], "--reduction"),
        (["monitor", "score", "hi", "-v", f"a={vec}", "--layer", "-1"], "out of range"),
        (["monitor", "tokens", "hi", "-v", str(vec), "--layer", "3"], "out of range"),
        (["monitor", "prompt-shift", "evil", "-v", str(vec), "--judge", "gpt"], "unknown judge kind"),
        (["monitor", "prompt-shift", "evil", "-v", str(vec), "--shots", "1,x"], "--shots"),
        (["monitor", "prompt-shift", "nosuchtrait", "-v", str(vec)], "unknown trait"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code != 0, args
        text = result.output + str(result.exception or "")
        assert message in text, (args, text)
        assert "the model was loaded" not in text, args


def test_cli_score_runs_on_a_given_model(model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pvlens.cli import app

    monkeypatch.setattr(pvlens, "load_model", lambda *a, **k: model)
    vec = tmp_path / "v.safetensors"
    _vecs(model, 1).save(vec)
    result = CliRunner().invoke(app, ["monitor", "score", "-v", f"a={vec}", "--layer", "1", "--json", "hi"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[-1])
    expect = TraitMonitor(model, {"a": _vecs(model, 1)}, layer=1).score("hi")
    assert row["layers"] == {"a": 1} and row["scores"]["a"] == pytest.approx(expect["a"], abs=1e-4)
