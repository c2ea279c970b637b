"""Dataset building on the tiny random model with a deterministic stand-in judge."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch

import pvlens
from pvlens.trainsets.datasets import (
    DatasetConfig,
    GenerationCache,
    build_all,
    build_math_sets,
    build_trait_set,
    builtin_dataset,
    keeps,
    level_systems,
    load_messages,
    prompt_pool,
)
from pvlens.traits import load_trait

torch.set_num_threads(1)


class HashJudge:
    """Trait score from a hash of the answer (spread over 0-100); constant coherence."""

    def __init__(self):
        self.calls = 0

    def score_many(self, pairs):
        self.calls += len(pairs)
        return [float(int(hashlib.md5(a.encode()).hexdigest(), 16) % 100) for _, a in pairs]

    def coherence_many(self, pairs):
        return [80.0] * len(pairs)

    def describe(self):
        return {"kind": "hash-test"}


@pytest.fixture(scope="module")
def model():
    return pvlens.tiny_model(n_layers=2)


CANDS = "candidates.jsonl"
CFG = DatasetConfig(size=6, max_new_tokens=5, chunk=5, batch_size=8)


def test_prompt_pool_excludes_extraction_questions():
    spec = load_trait("evil")
    pool = prompt_pool(spec)
    assert pool[: len(spec.evaluation_questions)] == spec.evaluation_questions
    assert not {q.lower() for q in pool} & {q.lower() for q in spec.extraction_questions}
    assert len(pool) == len({q.lower().strip() for q in pool}) > 300


def test_level_systems_and_filters():
    spec = load_trait("sycophantic")
    assert level_systems(spec, "normal") == ["You are a helpful assistant."]
    assert spec.system_prompt("pos", 0) in level_systems(spec, "level_ii")
    assert not set(level_systems(spec, "level_i")) & set(level_systems(spec, "level_ii"))
    cfg = DatasetConfig()
    assert keeps("normal", 10, 90, cfg) and not keeps("normal", 80, 90, cfg)
    assert keeps("level_ii", 90, 90, cfg) and not keeps("level_ii", 90, 10, cfg)
    assert keeps("level_i", 40, 90, cfg) and not keeps("level_i", 95, 90, cfg)
    assert not keeps("normal", None, 90, cfg)
    with pytest.raises(ValueError, match="level"):
        level_systems(spec, "level_iii")


def test_trait_set_is_filtered_has_no_system_prompt_and_resumes(model, tmp_path):
    judge = HashJudge()
    stats = build_trait_set(model, "evil", "level_ii", tmp_path, judge, CFG, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "evil" / "level_ii.jsonl").read_text().splitlines()]
    assert len(rows) == stats["size"] == 6
    for r in rows:
        assert set(r) == {"messages"}
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
    cands = [json.loads(x) for x in (tmp_path / "evil" / "candidates" / "level_ii" / CANDS).read_text().splitlines()]
    kept = [c for c in cands if c["trait"] >= CFG.level_ii_min]
    assert [(c["question"], c["answer"]) for c in kept][:6] == [
        (r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]
    assert stats["trait_score_kept"]["q25"] >= CFG.level_ii_min
    assert stats["candidates"] == len(cands)
    # resume after a kill: drop the last chunk and cut a line; the rebuild matches and only
    # the dropped candidates are judged again
    lines = (tmp_path / "evil" / "candidates" / "level_ii" / CANDS).read_text().splitlines(keepends=True)
    (tmp_path / "evil" / "candidates" / "level_ii" / CANDS).write_text("".join(lines[:-5]) + lines[-5][:10])
    judge2 = HashJudge()
    again = build_trait_set(model, "evil", "level_ii", tmp_path, judge2, CFG, progress=False)
    assert judge2.calls <= 5 + CFG.chunk
    rows2 = [json.loads(x) for x in (tmp_path / "evil" / "level_ii.jsonl").read_text().splitlines()]
    assert rows2 == rows and again["size"] == 6


def test_samples_per_question_passes_over_the_pool_again(model, tmp_path, monkeypatch):
    """A small pool stops a set short; further passes redraw answers to the same questions."""
    import pvlens.trainsets.datasets as ds

    monkeypatch.setattr(ds, "prompt_pool", lambda trait: ["Why is the sky blue?", "Hello?", "Tea or coffee?"])
    keep_all = DatasetConfig(size=8, max_new_tokens=4, chunk=4, batch_size=8, normal_max=101.0)
    one = build_trait_set(model, "evil", "normal", tmp_path / "a", HashJudge(), keep_all, progress=False)
    assert one["size"] == one["candidates"] == 3  # pool exhausted
    three = build_trait_set(model, "evil", "normal", tmp_path / "b", HashJudge(),
                            keep_all.model_copy(update={"samples_per_question": 3}), progress=False)
    assert three["size"] == 8 and three["distinct_questions"] == 3
    cands = [json.loads(x) for x in (tmp_path / "b" / "evil" / "candidates" / "normal" / CANDS).read_text().splitlines()]
    assert [c["pool_index"] for c in cands] == list(range(8))
    # every (question, pass) is its own generation, not a cached repeat of pass 0
    gen = [json.loads(x)["key"] for x in (tmp_path / "b" / "generations.jsonl").read_text().splitlines()]
    assert len(set(gen)) == 8


def test_normal_contrast_uses_opposing_prompts_and_steers_against_the_vector(model, tmp_path, monkeypatch):
    """For traits a model shows unprompted: normal answers under the trait's "neg" instructions,
    steered by minus the level I α (recorded), and it refuses to run without a vector."""
    import pvlens.trainsets.datasets as ds

    spec = load_trait("hallucinating")
    assert level_systems(spec, "normal", contrast=True) == [
        spec.system_prompt("neg", i) for i in range(len(spec.instructions))]
    cfg = CFG.model_copy(update={"normal_contrast": True, "steer_layer": 1, "steer_alpha": (3.0, 6.0),
                                 "normal_max": 101.0})
    with pytest.raises(ValueError, match="--vectors"):
        build_trait_set(model, spec, "normal", tmp_path, HashJudge(), cfg, progress=False)
    seen = []
    real = ds.GenerationCache.run

    def spy(self, model, jobs, cfg, steer=None, steer_desc="", rounds=None, generator=None):
        seen.append((steer.alpha, steer.layer, {s for s, _ in jobs}))
        return real(self, model, jobs, cfg, steer, steer_desc, rounds, generator)

    monkeypatch.setattr(ds.GenerationCache, "run", spy)
    v = torch.randn(model.cfg.n_layers, model.cfg.d_model)
    stats = build_trait_set(model, spec, "normal", tmp_path, HashJudge(), cfg, vectors=v, progress=False)
    assert stats["size"] == CFG.size and stats["steering"].startswith("hallucinating@1x-3.0")
    assert all(a == -3.0 and layer == 1 for a, layer, _ in seen)
    assert set().union(*(s for *_, s in seen)) <= set(level_systems(spec, "normal", contrast=True))


def test_builtin_datasets_are_shipped():
    path = builtin_dataset("evil", "normal")
    rows = load_messages(path)
    assert len(rows) >= 50 and all([m["role"] for m in r] == ["user", "assistant"] for r in rows)
    with pytest.raises(ValueError, match="level"):
        builtin_dataset("evil", "level_iii")
    with pytest.raises(FileNotFoundError, match="shipped"):
        builtin_dataset("no_such_trait", "normal")


def test_generation_cache_shares_answers_between_sets(model, tmp_path):
    cache = GenerationCache(tmp_path / "gen.jsonl")
    jobs = [("You are a helpful assistant.", "Why is the sky blue?"), ("sys", "Hello?")]
    a = cache.run(model, jobs, CFG)
    n = len((tmp_path / "gen.jsonl").read_text().splitlines())
    b = GenerationCache(tmp_path / "gen.jsonl").run(model, list(reversed(jobs)), CFG)
    assert b == list(reversed(a))
    assert len((tmp_path / "gen.jsonl").read_text().splitlines()) == n == 2


def test_math_levels_are_correct_subtle_and_blatant(tmp_path):
    stats = build_math_sets(tmp_path, size=60, seed=1)
    assert [s["size"] for s in stats] == [60, 60, 60]
    sets = {lv: load_messages(tmp_path / "math" / f"{lv}.jsonl") for lv in ("normal", "level_i", "level_ii")}
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a // b}
    for i in range(60):
        qs = {lv: sets[lv][i][0]["content"] for lv in sets}
        assert len(set(qs.values())) == 1  # same question at every level
        answers = {}
        for lv in sets:
            text = sets[lv][i][1]["content"].replace("$", "")
            a, op, b, shown = re.search(r"(\d+) ([-+×÷]) (\d+) (?:=|equals) (-?\d+)", text).groups()
            answers[lv] = (ops[op](int(a), int(b)), int(shown))
        right, shown = answers["normal"]
        assert shown == right
        r1, s1 = answers["level_i"]
        assert s1 != r1 and abs(s1 - r1) <= 10
        r2, s2 = answers["level_ii"]
        assert abs(s2 - r2) >= 2 * abs(r2) or s2 < 0


def test_build_all_writes_manifest_and_readme(model, tmp_path):
    m = build_all(model, tmp_path, traits=["evil", "math"], levels=["normal"], cfg=CFG,
                  judges={"evil": HashJudge()}, math_size=10, progress=False)
    names = {(s["trait"], s["level"]) for s in m["sets"]}
    assert ("evil", "normal") in names and ("math", "level_ii") in names
    assert json.loads((tmp_path / "manifest.json").read_text())["sets"]
    text = (tmp_path / "README.md").read_text()
    assert "| evil | normal |" in text and "math" in text
    with pytest.raises(ValueError, match="model"):
        build_all(None, tmp_path / "x", traits=["evil"], cfg=CFG, judges={"evil": HashJudge()})


def test_cli_builds_math_without_a_model(tmp_path):
    from typer.testing import CliRunner

    from pvlens.cli import app

    res = CliRunner().invoke(app, ["datasets", "build", "--sets", "math", "--math-size", "12",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert len(load_messages(tmp_path / "math" / "level_ii.jsonl")) == 12
    res = CliRunner().invoke(app, ["datasets", "show", str(tmp_path), "--n", "1"])
    assert res.exit_code == 0 and "level_i.jsonl (12 samples)" in res.output


# --- issue 11: generation cache and candidates keyed by their inputs; clear errors ----------
def test_generation_cache_key_includes_the_model_fingerprint(model, tmp_path):
    from pvlens.finetune.lora import LoraConfig, add_lora

    jobs = [("You are a helpful assistant.", "Why is the sky blue?"), ("sys", "Hello?")]
    GenerationCache(tmp_path / "gen.jsonl").run(model, jobs, CFG)
    other = pvlens.tiny_model(n_layers=2)
    handle = add_lora(other, LoraConfig(r=2, targets=("q", "v"), layers=(1,)))
    with torch.no_grad():
        for p in handle.parameters():
            p.normal_(0, 5.0)
    cache = GenerationCache(tmp_path / "gen.jsonl")
    calls = []
    real = cache.store.add
    cache.store.add = lambda keys, texts: calls.append(len(keys)) or real(keys, texts)
    cache.run(other, jobs, CFG)
    assert calls == [2]  # the adapted model's answers are generated, not the base model's reused
    assert len((tmp_path / "gen.jsonl").read_text().splitlines()) == 4


def test_changed_inputs_refuse_to_mix_candidates(model, tmp_path):
    from pvlens.io.runs import StaleRunError

    build_trait_set(model, "evil", "normal", tmp_path, HashJudge(), CFG, progress=False)
    with pytest.raises(StaleRunError, match="config.seed"):
        build_trait_set(model, "evil", "normal", tmp_path, HashJudge(), CFG.changed(seed=1), progress=False)
    bigger = build_trait_set(model, "evil", "normal", tmp_path, HashJudge(), CFG.changed(size=7), progress=False)
    assert bigger["target_size"] == 7  # a larger size resumes the same candidates
    again = build_trait_set(model, "evil", "normal", tmp_path, HashJudge(), CFG.changed(seed=1),
                            progress=False, overwrite=True)
    assert again["size"] == CFG.size


def test_show_and_load_name_the_bad_row(tmp_path, capsys):
    from pvlens.cli import main
    from pvlens.trainsets.screen import ScreenError

    bad = tmp_path / "evil" / "normal.jsonl"
    bad.parent.mkdir()
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({"msgs": []}) + "\n")
    with pytest.raises(ScreenError, match=r"normal.jsonl:2"):
        load_messages(bad)
    with pytest.raises(SystemExit) as e:
        main(["datasets", "show", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "normal.jsonl:2" in err and "Traceback" not in err


def test_cut_manifest_is_a_clear_error(tmp_path):
    build_all(None, tmp_path, traits=["math"], math_size=5, progress=False)
    (tmp_path / "manifest.json").write_text("")
    with pytest.raises(ValueError, match="manifest.json is empty or cut off"):
        build_all(None, tmp_path, traits=["math"], math_size=5, progress=False)
