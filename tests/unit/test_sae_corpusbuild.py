"""`pvlens sae build-corpus`: the prompt plan, de-duplication, manifest and resume (tiny model)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pvlens.io.runs import StaleRunError
from pvlens.sae.corpusbuild import (
    RunConfig,
    SaeCorpusConfig,
    build_sae_corpus,
    content_hash,
    package_text_rows,
    plan_jobs,
)
from pvlens.sae.promptplan import TEMPLATES, composed_prompts, conditions, grid_size


def test_composed_prompts_balanced_and_distinct():
    rows = composed_prompts(600, seed=0)
    assert len(rows) == 600 and len({r["prompt"] for r in rows}) == 600
    per_template = Counter(r["template"] for r in rows)
    assert len(per_template) == len(TEMPLATES) and max(per_template.values()) - min(per_template.values()) <= 1
    assert len({r["topic"] for r in rows}) >= 40 and len({r["task"] for r in rows}) >= 15
    assert len(composed_prompts(10**6)) == grid_size()
    assert composed_prompts(50, seed=1) != composed_prompts(50, seed=0)


def test_plan_covers_every_condition_with_unique_keys():
    from pvlens.traits import builtin_traits

    jobs = plan_jobs(SaeCorpusConfig())
    assert len({j["key"] for j in jobs}) == len(jobs)
    names = Counter(j["condition"].name for j in jobs)
    for t in builtin_traits():
        assert names[f"{t}:pos"] > 0 and names[f"{t}:neg"] > 0
    for t in ("evil", "sycophantic", "hallucinating"):  # shipped vectors, both signs
        assert names[f"steer:{t}:+"] > 0 and names[f"steer:{t}:-"] > 0
    assert max(names.values()) == names["neutral"] < len(jobs) / 2
    assert len(conditions(["a"], ["b"], 3)) == 3 + 2 + 2
    limited = plan_jobs(SaeCorpusConfig(limit=30))
    assert [j["key"] for j in limited] == [j["key"] for j in jobs[:30]]  # a limit is a prefix


def test_package_text_is_english_and_licensed():
    rows = list(package_text_rows())
    sources = {s for s, _ in rows}
    assert "pydoc_data" in sources
    text = " ".join(r["text"] for s, r in rows if s == "pydoc_data")
    assert len(text) > 100_000 and " the " in text


def test_build_dedups_resumes_and_records_manifest(tiny, tmp_path):
    extra = tmp_path / "extra.jsonl"
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    extra.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n" + json.dumps({"text": "plain words"}) + "\n")
    cfg = SaeCorpusConfig(n_composed=20, builtin_prompts=False, trait_questions=False,
                          prompt_traits=["evil"], steer_traits=[], neutral_weight=1, max_new_tokens=4, limit=6)
    run = RunConfig(batch_size=4, extra=[extra], package_text=False, shipped_datasets=False)
    out = tmp_path / "corpus"
    m = build_sae_corpus(tiny, out, cfg, run, progress=False)
    assert m["generated_replies"] == 6 and m["generation"]["complete"]
    assert m["sources"]["extra.jsonl"] == {"rows": 2, "duplicates": 1, "documents": 2,
                                           "tokens": m["sources"]["extra.jsonl"]["tokens"]}
    assert m["total_tokens"] == sum(s["tokens"] for s in m["sources"].values()) > 0
    lines = [json.loads(x) for x in (out / "corpus.jsonl").read_text().splitlines()]
    assert len(lines) == len({content_hash(r) for r in lines}) == 6 + 2
    conds = {r["meta"]["condition"] for r in lines if "meta" in r and "condition" in r["meta"]}
    assert conds <= {"neutral", "evil:pos", "evil:neg"}
    assert any(r["messages"][0]["role"] == "system" for r in lines if "meta" in r and r["meta"].get("condition") == "evil:pos")
    before = (out / "generated.jsonl").read_text()
    m2 = build_sae_corpus(tiny, out, cfg, run, progress=False)  # resume: nothing left to generate
    assert m2["generation"]["generated_now"] == 0 and (out / "generated.jsonl").read_text() == before
    assert m2["generation"]["seconds_total"] >= m["generation"]["seconds_total"]
    with pytest.raises(StaleRunError, match="max_new_tokens"):
        build_sae_corpus(tiny, out, cfg.model_copy(update={"max_new_tokens": 5}), run, progress=False)


def test_time_limit_stops_and_a_rerun_completes(tiny, tmp_path):
    cfg = SaeCorpusConfig(n_composed=12, builtin_prompts=False, trait_questions=False, prompt_traits=[],
                          steer_traits=[], neutral_weight=1, max_new_tokens=2, limit=8)
    out = tmp_path / "c"
    m = build_sae_corpus(tiny, out, cfg, RunConfig(batch_size=2, max_minutes=1e-9, package_text=False,
                                                   shipped_datasets=False), progress=False)
    assert not m["generation"]["complete"] and m["generated_replies"] < 8
    m = build_sae_corpus(tiny, out, cfg, RunConfig(batch_size=2, package_text=False, shipped_datasets=False),
                         progress=False)
    assert m["generation"]["complete"] and m["generated_replies"] == 8


def test_replies_per_prompt_gives_distinct_conditions_per_prompt():
    cfg = SaeCorpusConfig(n_composed=40, builtin_prompts=False, trait_questions=False,
                          prompt_traits=["evil"], steer_traits=[], neutral_weight=2, replies_per_prompt=3)
    jobs = plan_jobs(cfg)
    assert len(jobs) == 40 * 3 and len({j["key"] for j in jobs}) == len(jobs)
    by_prompt: dict[str, list[str]] = {}
    for j in jobs:
        by_prompt.setdefault(j["meta"]["prompt_id"], []).append(j["condition"].name)
    assert all(len(c) == 3 for c in by_prompt.values())
    # the cycle is [neutral, neutral, evil:pos, evil:neg]: any three consecutive entries hold a
    # system prompt
    assert all({"evil:pos", "evil:neg"} & set(c) for c in by_prompt.values())


def test_shards_split_the_plan_and_the_final_run_writes_every_reply(tiny, tmp_path):
    from pvlens.sae.corpusbuild import in_shard

    cfg = SaeCorpusConfig(n_composed=10, builtin_prompts=False, trait_questions=False, prompt_traits=[],
                          steer_traits=[], neutral_weight=1, max_new_tokens=2)
    keys = [j["key"] for j in plan_jobs(cfg)]
    assert sorted(k for s in range(3) for k in keys if in_shard(k, (s, 3))) == sorted(keys)
    out = tmp_path / "c"
    base = dict(batch_size=2, package_text=False, shipped_datasets=False)
    r0 = build_sae_corpus(tiny, out, cfg, RunConfig(**base, shard=(0, 2)), progress=False)
    assert "sources" not in r0 and not (out / "corpus.jsonl").exists()
    assert r0["generation"]["generated_now"] == sum(in_shard(k, (0, 2)) for k in keys)
    build_sae_corpus(tiny, out, cfg, RunConfig(**base, shard=(1, 2)), progress=False)
    m = build_sae_corpus(tiny, out, cfg, RunConfig(**base), progress=False)
    assert m["generation"]["generated_now"] == 0 and m["generated_replies"] == len(keys) == 10
    assert set(m["generation"]["seconds_by_log"]) == {"generated.shard0of2.jsonl", "generated.shard1of2.jsonl",
                                                       "generated.jsonl"}
    with pytest.raises(ValueError, match="0 <= I < N"):
        build_sae_corpus(tiny, out, cfg, RunConfig(**base, shard=(2, 2)), progress=False)


def test_fill_tops_up_with_stdlib_docstrings_to_the_target(tiny, tmp_path):
    from pvlens.sae.corpusbuild import PACKAGE_TEXT_LICENCES, docstring_modules, docstring_rows

    first = next(docstring_rows())
    assert first[0].startswith("docstrings/") and len(first[1]["text"]) >= 200
    assert first[1]["meta"]["module"].endswith(".py")
    assert next(docstring_rows(seed=1))[1]["meta"] != first[1]["meta"]  # seeded order
    modules = docstring_modules()
    assert {s for s, _, _ in modules} <= set(PACKAGE_TEXT_LICENCES) and "docstrings/numpy" in {s for s, _, _ in modules}
    assert not any("tests" in p.parts or "site-packages" in p.relative_to(r).parts for _, r, p in modules)
    cfg = SaeCorpusConfig(n_composed=2, builtin_prompts=False, trait_questions=False, prompt_traits=[],
                          steer_traits=[], neutral_weight=1, max_new_tokens=2)
    run = RunConfig(batch_size=2, shipped_datasets=False)
    target = build_sae_corpus(tiny, tmp_path / "a", cfg, run, progress=False)["total_tokens"] + 20_000
    m = build_sae_corpus(tiny, tmp_path / "c", cfg, run.model_copy(update={"fill_tokens": target}),
                         progress=False)
    fill = {k: v for k, v in m["sources"].items() if k.startswith("docstrings/")}
    n_fill = sum(v["tokens"] for v in fill.values())
    assert m["total_tokens"] >= target and m["total_tokens"] - n_fill < target
    # it stops at the target: dropping the last module would leave the corpus short of it
    assert sum(v["rows"] for v in fill.values()) < 200 and set(fill) <= set(m["licences"])
    assert m["docstring_versions"]["stdlib"] == m["python"] and "numpy" in m["docstring_versions"]
