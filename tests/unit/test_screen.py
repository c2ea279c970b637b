"""Screening on the tiny random model: ΔP maths, planted samples, streaming, resume, shards."""

from __future__ import annotations

import json

import pytest
import torch

import pvlens
from pvlens.core.activations import collect
from pvlens.core.chat import encode_conversation
from pvlens.core.generation import generate
from pvlens.io.runs import StaleRunError
from pvlens.trainsets.screen import (
    BaseReplies,
    ScreenConfig,
    ScreenError,
    auroc,
    iter_samples,
    load_results,
    merge,
    paired_activations,
    parse_shard,
    screen,
)
from pvlens.vectors import PersonaVectors

torch.set_num_threads(1)
LAYER = 1
QUESTIONS = [f"Question number {i}: what do you think about topic {i}?" for i in range(14)]
NORMAL = ["It depends on the details.", "Here is a balanced view.", "Good question, let us see."]
PLANTED = "cruel cruel cruel revenge revenge hurt hurt pain pain"


@pytest.fixture(scope="module")
def model():
    return pvlens.tiny_model(n_layers=3)


def _rows(planted_every: int = 3) -> list[dict]:
    rows = []
    for i, q in enumerate(QUESTIONS):
        reply = PLANTED if i % planted_every == 0 else NORMAL[i % len(NORMAL)] * (1 + i % 2)
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}]})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def vectors(model):
    """A direction planted by the data: mean(planted replies) − mean(normal replies)."""
    tok = model.tokenizer
    pos = [encode_conversation(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": PLANTED}])
           for q in QUESTIONS[:4]]
    neg = [encode_conversation(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
           for q in QUESTIONS[:4] for a in NORMAL]
    a = collect(model, pos, ("response_avg",), progress=False)["response_avg"].mean(0)
    b = collect(model, neg, ("response_avg",), progress=False)["response_avg"].mean(0)
    return PersonaVectors({"response_avg": a - b}, {"trait": "planted"})


def _cfg(**kw):
    return ScreenConfig(layer=LAYER, max_new_tokens=6, chunk_size=4, max_batch=3, top_k=3, **kw)


def test_paired_activations_equal_separate_collect(model):
    tok = model.tokenizer
    data, base = [], []
    for i, q in enumerate(QUESTIONS[:7]):
        p = [{"role": "user", "content": q}]
        data.append(encode_conversation(tok, [*p, {"role": "assistant", "content": NORMAL[i % 3] * (i + 1)}]))
        base.append(encode_conversation(tok, [*p, {"role": "assistant", "content": "ok " * (7 - i)}]))
    got = paired_activations(model, data, base, LAYER, max_tokens=200, max_batch=3)
    a = collect(model, data, ("response_avg", "last_prompt", "prompt_avg"), layers=[LAYER], progress=False)
    b = collect(model, base, ("response_avg",), layers=[LAYER], progress=False)
    for k, ref in (("data", a["response_avg"]), ("base", b["response_avg"]),
                   ("last_prompt", a["last_prompt"]), ("prompt_avg", a["prompt_avg"])):
        assert torch.allclose(got[k], ref[:, 0], atol=1e-4), k


def test_delta_is_data_minus_base_projection_and_planted_samples_rank_first(model, vectors, tmp_path):
    rows = _rows()
    data = _write(tmp_path / "d.jsonl", rows)
    s = screen(model, data, vectors, tmp_path / "out", _cfg(), cache_dir=tmp_path / "cache", progress=False)
    res = load_results(tmp_path / "out")
    assert [r["index"] for r in res] == list(range(len(rows)))
    # recompute by hand: base replies from the cache must be the greedy replies
    tok = model.tokenizer
    prompts = [r["messages"][:-1] for r in rows]
    greedy = generate(model, prompts, max_new_tokens=6, progress=False).texts
    cached = BaseReplies(model, tmp_path / "cache", 6).get(prompts)
    assert cached == greedy
    u = vectors[LAYER] / vectors[LAYER].norm()
    d = collect(model, [encode_conversation(tok, r["messages"]) for r in rows], ("response_avg",),
                layers=[LAYER], progress=False)["response_avg"][:, 0] @ u
    b = collect(model, [encode_conversation(tok, [*p, {"role": "assistant", "content": g}])
                        for p, g in zip(prompts, greedy, strict=True)],
                ("response_avg",), layers=[LAYER], progress=False)["response_avg"][:, 0] @ u
    for r, di, bi in zip(res, d.tolist(), b.tolist(), strict=True):
        assert r["proj"] == pytest.approx(di, abs=1e-4)
        assert r["delta"] == pytest.approx(di - bi, abs=1e-4)
    assert s.delta_p == pytest.approx(float((d - b).mean()), abs=1e-4)
    planted = [r["delta"] for r in res if r["index"] % 3 == 0]
    normal = [r["delta"] for r in res if r["index"] % 3 != 0]
    assert auroc(planted, normal) == 1.0
    assert all(t["index"] % 3 == 0 for t in s.top) and len(s.top) == 3
    flagged = [json.loads(x) for x in (tmp_path / "out" / "flagged.jsonl").read_text().splitlines()]
    assert [f["index"] for f in flagged] == [t["index"] for t in s.top]
    assert flagged[0]["messages"] == rows[flagged[0]["index"]]["messages"]
    assert (tmp_path / "out" / "delta_hist.png").stat().st_size > 1000
    assert set(s.approx_spearman) == {"last_prompt", "prompt_avg"}
    # a dataset of only planted replies has a larger dataset ΔP than one without
    only = _write(tmp_path / "p.jsonl", [r for i, r in enumerate(rows) if i % 3 == 0])
    none = _write(tmp_path / "n.jsonl", [r for i, r in enumerate(rows) if i % 3 != 0])
    sp = screen(model, only, vectors, tmp_path / "op", _cfg(), cache_dir=tmp_path / "cache", progress=False)
    sn = screen(model, none, vectors, tmp_path / "on", _cfg(), cache_dir=tmp_path / "cache", progress=False)
    assert sp.delta_p > sn.delta_p


def test_resume_after_kill_equals_one_run(model, vectors, tmp_path, monkeypatch):
    data = _write(tmp_path / "d.jsonl", _rows())
    full = screen(model, data, vectors, tmp_path / "a", _cfg(), cache_dir=tmp_path / "c", progress=False)
    ref = load_results(tmp_path / "a")
    # simulate a kill: first chunk written, second chunk cut mid-line
    lines = (tmp_path / "a" / "results.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.jsonl").write_text("".join(lines[:4]) + lines[4][:15])
    (tmp_path / "b" / "inputs.json").write_text((tmp_path / "a" / "inputs.json").read_text())
    (tmp_path / "b" / "meta.json").write_text("")  # a kill mid-write left it empty: rewritten
    import pvlens.trainsets.screen.kernel as scr

    seen = []
    real = scr.paired_activations
    monkeypatch.setattr(scr, "paired_activations", lambda m, d, *a, **k: seen.append(len(d)) or real(m, d, *a, **k))
    again = screen(model, data, vectors, tmp_path / "b", _cfg(), cache_dir=tmp_path / "c", progress=False)
    assert sum(seen) == len(ref) - 4  # only the missing samples were recomputed
    res = load_results(tmp_path / "b")
    assert [r["index"] for r in res] == [r["index"] for r in ref]
    for r, q in zip(res, ref, strict=True):
        assert r["delta"] == pytest.approx(q["delta"], abs=1e-4)
    assert again.delta_p == pytest.approx(full.delta_p, abs=1e-5)
    # a different vector cannot resume into the same folder
    other = PersonaVectors({"response_avg": torch.ones_like(vectors.vectors)})
    with pytest.raises(StaleRunError, match="vectors"):
        screen(model, data, other, tmp_path / "b", _cfg(), progress=False)


def test_shards_then_merge_equal_single_run(model, vectors, tmp_path):
    data = _write(tmp_path / "d.jsonl", _rows())
    single = screen(model, data, vectors, tmp_path / "one", _cfg(), cache_dir=tmp_path / "c", progress=False)
    assert screen(model, data, vectors, tmp_path / "s0", _cfg(), cache_dir=tmp_path / "c",
                  shard=(0, 3), progress=False) is None
    for i in (1, 2):
        screen(model, data, vectors, tmp_path / f"s{i}", _cfg(), cache_dir=tmp_path / "c",
               shard=(i, 3), progress=False)
    with pytest.raises(ScreenError, match="missing shard"):
        merge(tmp_path / "s0", [tmp_path / "s1"])
    merged = merge(tmp_path / "s0", [tmp_path / "s1", tmp_path / "s2"])
    a, b = load_results(tmp_path / "one"), load_results(tmp_path / "s0")
    assert [r["index"] for r in a] == [r["index"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["delta"] == pytest.approx(y["delta"], abs=1e-4)
    assert merged.delta_p == pytest.approx(single.delta_p, abs=1e-5)
    assert [t["index"] for t in merged.top] == [t["index"] for t in single.top]
    assert (tmp_path / "s0" / "flagged.jsonl").exists()


def test_hf_dataset_input_equals_jsonl(model, vectors, tmp_path):
    import datasets

    rows = _rows()
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    a = screen(model, _write(tmp_path / "d.jsonl", rows), vectors, tmp_path / "a", _cfg(),
               cache_dir=tmp_path / "c", progress=False)
    b = screen(model, tmp_path / "hf", vectors, tmp_path / "b", _cfg(), cache_dir=tmp_path / "c",
               progress=False)
    assert b.delta_p == pytest.approx(a.delta_p, abs=1e-5)
    assert list(iter_samples(tmp_path / "hf")) == list(iter_samples(tmp_path / "d.jsonl"))


def test_input_is_streamed_and_errors_name_the_sample(tmp_path):
    rows = _rows()
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n{broken\n")
    it = iter_samples(path)
    assert next(it)[0] == 0 and next(it)[0] == 1  # read lazily: the bad line is not reached yet
    with pytest.raises(ScreenError, match=r"d.jsonl:4: not valid JSON"):
        next(it)
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ScreenError, match="sample 0.*assistant"):
        list(iter_samples(bad))
    with pytest.raises(ScreenError, match="i/n"):
        parse_shard("2")
    with pytest.raises(ScreenError, match="0 <= i < n"):
        parse_shard("3/3")
    assert parse_shard("1/4") == (1, 4)


def test_cli_merge_and_input_errors(model, vectors, tmp_path):
    from typer.testing import CliRunner

    from pvlens.cli import app

    data = _write(tmp_path / "d.jsonl", _rows())
    for i in range(2):
        screen(model, data, vectors, tmp_path / "out", _cfg(), cache_dir=tmp_path / "c",
               shard=(i, 2), progress=False)
    runner = CliRunner()
    res = runner.invoke(app, ["screen", "merge", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "dataset ΔP" in res.output and (tmp_path / "out" / "screen.json").exists()
    res = runner.invoke(app, ["screen", str(tmp_path / "missing.jsonl"), "--vectors", str(tmp_path)])
    assert res.exit_code != 0 and "does not exist" in res.output


def test_paired_activations_several_layers(model):
    tok = model.tokenizer
    p = [{"role": "user", "content": QUESTIONS[0]}]
    data = [encode_conversation(tok, [*p, {"role": "assistant", "content": a}]) for a in NORMAL]
    base = [encode_conversation(tok, [*p, {"role": "assistant", "content": "fine " * (i + 1)}]) for i in range(3)]
    many = paired_activations(model, data, base, [0, 2])
    for j, layer in enumerate((0, 2)):
        one = paired_activations(model, data, base, layer)
        for k in one:
            assert torch.allclose(many[k][:, j], one[k], atol=1e-5), (k, layer)


# --- issue 11: inputs-keyed run folders, atomic metadata, long inputs, bad files -------------
def test_lora_on_q_v_changes_the_base_reply_key_and_replies_are_regenerated(vectors, tmp_path):
    from pvlens.finetune.lora import LoraConfig, add_lora

    m = pvlens.tiny_model(n_layers=3, seed=1)
    prompts = [r["messages"][:-1] for r in _rows()[:3]]
    base = BaseReplies(m, tmp_path / "c", 6)
    before_key = base.key(prompts[0])
    before = base.get(prompts)
    handle = add_lora(m, LoraConfig(r=2, targets=("q", "v"), layers=(2,)))
    with torch.no_grad():
        for p in handle.parameters():
            p.normal_(0, 5.0)  # B starts at zero: give the adapter a real effect
    adapted = BaseReplies(m, tmp_path / "c", 6)
    assert adapted.key(prompts[0]) != before_key
    calls = []
    real = adapted.store.add
    adapted.store.add = lambda keys, texts: calls.append(len(keys)) or real(keys, texts)
    got = adapted.get(prompts)
    assert calls == [3]  # every reply was generated again, none served from the base model's cache
    assert got == generate(m, prompts, max_new_tokens=6, progress=False).texts
    assert got != before


def test_changed_inputs_refuse_naming_them_and_overwrite_discards(model, vectors, tmp_path):
    data = _write(tmp_path / "d.jsonl", _rows())
    screen(model, data, vectors, tmp_path / "o", _cfg(), cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(StaleRunError, match="config.cosine"):
        screen(model, data, vectors, tmp_path / "o", _cfg(cosine=True), progress=False)
    with pytest.raises(StaleRunError, match="config.max_new_tokens"):
        screen(model, data, vectors, tmp_path / "o", _cfg().changed(max_new_tokens=5), progress=False)
    edited = _rows()
    edited[1]["messages"][-1]["content"] = "An edited reply."
    _write(data, edited)  # same path, other content
    with pytest.raises(StaleRunError, match="data"):
        screen(model, data, vectors, tmp_path / "o", _cfg(), progress=False)
    s = screen(model, data, vectors, tmp_path / "o", _cfg(cosine=True), cache_dir=tmp_path / "c",
               progress=False, overwrite=True)
    res = load_results(tmp_path / "o")
    assert len(res) == len(edited) and all(abs(r["proj"]) <= 1 for r in res)  # cosines: recomputed
    assert s.n == len(edited)


def test_results_without_inputs_record_and_empty_inputs_file_are_clear_errors(model, vectors, tmp_path):
    data = _write(tmp_path / "d.jsonl", _rows())
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.jsonl").write_text('{"index": 0, "delta": 1.0}\n')
    with pytest.raises(StaleRunError, match="no record of their inputs"):
        screen(model, data, vectors, tmp_path / "o", _cfg(), progress=False)
    (tmp_path / "o" / "inputs.json").write_text("")
    with pytest.raises(ValueError, match="inputs.json is empty or cut off"):
        screen(model, data, vectors, tmp_path / "o", _cfg(), progress=False)


def test_samples_longer_than_the_context_are_skipped_counted_and_reported(model, vectors, tmp_path):
    rows = _rows()
    rows[2]["messages"][-1]["content"] = "word " * 700  # > n_ctx (512) tokens
    rows[5]["messages"][0]["content"] = "x" * (64 * 512 + 1)  # skipped without tokenising
    data = _write(tmp_path / "d.jsonl", rows)
    s = screen(model, data, vectors, tmp_path / "o", _cfg(), cache_dir=tmp_path / "c", progress=False)
    assert s.skipped_too_long == 2 and s.skipped_indices == [2, 5]
    assert s.n == len(rows) - 2
    assert [r["index"] for r in load_results(tmp_path / "o")] == [i for i in range(len(rows)) if i not in (2, 5)]
    saved = json.loads((tmp_path / "o" / "screen.json").read_text())
    assert saved["skipped_too_long"] == 2
    again = screen(model, data, vectors, tmp_path / "o", _cfg(), cache_dir=tmp_path / "c", progress=False)
    assert again.skipped_too_long == 2 and again.delta_p == pytest.approx(s.delta_p)


def test_non_utf8_input_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(_rows()[0]).encode() + b"\n" + b'{"messages": "\xff\xfe"}\n')
    with pytest.raises(ScreenError, match=r"d.jsonl:2: not UTF-8"):
        list(iter_samples(path))


def test_merge_refuses_a_cut_meta_file(model, vectors, tmp_path):
    data = _write(tmp_path / "d.jsonl", _rows())
    for i in range(2):
        screen(model, data, vectors, tmp_path / "out", _cfg(), cache_dir=tmp_path / "c",
               shard=(i, 2), progress=False)
    (tmp_path / "out" / "meta.shard-1-of-2.json").write_text('{"shard": [1,')
    with pytest.raises(ValueError, match="meta.shard-1-of-2.json is empty or cut off"):
        merge(tmp_path / "out")


def test_cli_validates_data_and_vectors_before_loading_the_model(vectors, tmp_path, monkeypatch, capsys):
    from pvlens.cli import main

    def no_model(*a, **k):
        raise AssertionError("the model must not be loaded for bad inputs")

    monkeypatch.setattr(pvlens, "load_model", no_model)
    vec = tmp_path / "v.safetensors"
    vectors.save(vec)
    bad = tmp_path / "d.jsonl"
    bad.write_text(json.dumps(_rows()[0]) + "\n" + '{"messages": [{"role": "user", "content": "q"}]}\n')
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"not a tensor file")
    good = _write(tmp_path / "ok.jsonl", _rows())
    for args, want in ((["screen", str(bad), "-v", str(vec)], "d.jsonl:2"),
                       (["screen", str(good), "-v", str(garbage)], "g.safetensors"),
                       (["screen", str(good), "-v", str(vec), "--layer", "7"], "layer 7")):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and want in err and "Traceback" not in err, err
