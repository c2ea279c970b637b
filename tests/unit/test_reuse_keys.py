"""A stored result is reused only when every input that determines it is identical: for each
reuse site fixed by the reuse audit, store a result, change exactly one input, and check that
the rerun refuses (naming the input) or recomputes instead of serving the stored number."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pvlens
from pvlens.core.device import COMPUTE_DTYPE_ENV, resolved_dtype_name
from pvlens.io.runs import StaleRunError
from pvlens.vectors import PersonaVectors

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return pvlens.tiny_model(n_layers=2)


def _vecs(model, seed: int = 0) -> PersonaVectors:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g) * 3
    return PersonaVectors({"response_avg": t}, {"trait": f"t{seed}"})


class ConstJudge:
    """Scores by answer length (deterministic, no model)."""

    def score_many(self, pairs):
        return [float(len(a) % 100) for _, a in pairs]

    def coherence_many(self, pairs):
        return [80.0] * len(pairs)

    def describe(self):
        return {"kind": "const"}


def test_resolved_dtype_name_follows_auto_and_the_environment(monkeypatch):
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")
    assert resolved_dtype_name("auto", "cpu") == "bfloat16"
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    assert resolved_dtype_name("auto", "cpu") == "float32"
    assert resolved_dtype_name(None, "cpu", torch.bfloat16) == "bfloat16"
    assert resolved_dtype_name(torch.float16, "cpu") == "float16"


def test_prompt_shift_refuses_a_run_made_at_another_compute_dtype(model, tmp_path, monkeypatch):
    from pvlens.monitor import PromptShiftConfig, prompt_shift

    cfg = PromptShiftConfig(n_questions=1, samples=1, max_new_tokens=2, shots=(), ladder=True)
    v = _vecs(model)
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    prompt_shift(model, "evil", v, 1, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False)
    # the same inputs resume
    prompt_shift(model, "evil", v, 1, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False)
    # what "auto" picks on an AMX CPU: projections in bf16 must not be mixed with fp32 ones
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")
    with pytest.raises(StaleRunError, match="compute_dtype"):
        prompt_shift(model, "evil", v, 1, tmp_path, judge=ConstJudge(), cfg=cfg, progress=False)


def _rollouts_file(model, path):
    from pvlens.core.activations import collect
    from pvlens.vectors.directions import mean_difference
    from pvlens.vectors.rollouts import Rollout, write_rollouts

    rs = [Rollout(p, 0, q, 0, f"question {q}?", "You are an assistant.", "p",
                  f"{'cruel ' if p == 'pos' else 'kind '}answer number {q} " * 3, 80.0, 80.0, True)
          for q in range(4) for p in ("pos", "neg")]
    write_rollouts(path, rs)
    acts = {p: collect(model, [r.chat(model.tokenizer) for r in rs if r.polarity == p], ("response_avg",),
                       dtype=torch.float32, progress=False)["response_avg"] for p in ("pos", "neg")}
    return PersonaVectors({"response_avg": mean_difference(acts["pos"], acts["neg"])}, {"trait": "evil"})


def test_saved_directions_are_recomputed_at_another_compute_dtype(model, tmp_path, monkeypatch):
    from pvlens.vectors import directions_run

    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    vecs = _rollouts_file(model, tmp_path / "r.jsonl")
    saved = tmp_path / "saved.safetensors"
    directions_run.load_or_add_directions(model, vecs, tmp_path / "r.jsonl", saved)
    calls: list[str] = []
    monkeypatch.setattr(directions_run, "add_directions", lambda *a, **k: calls.append("recomputed") or vecs)
    monkeypatch.setattr(PersonaVectors, "save", lambda self, path: path)
    directions_run.load_or_add_directions(model, vecs, tmp_path / "r.jsonl", saved)
    assert calls == []  # same inputs: the saved file is served
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")
    directions_run.load_or_add_directions(model, vecs, tmp_path / "r.jsonl", saved)
    assert calls == ["recomputed"]  # pca/probe from bf16 activations are not the saved fp32 ones


def test_shift_records_are_not_reused_at_another_screening_dtype(model, tmp_path, monkeypatch):
    import json

    from pvlens.finetune.experiments import ShiftConfig, run_shift

    data = tmp_path / "datasets" / "evil" / "normal.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                     {"role": "assistant", "content": f"An answer {i}."}]}) + "\n"
                            for i in range(2)))
    cfg = ShiftConfig.preset("quick", layer=1)
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_new_tokens": 2, "n_questions": 1, "samples": 1,
                                                                 "mc_limit": 0, "perplexity": False}),
                                 "screen_max_new_tokens": 2})
    vecs = {"evil": _vecs(model).vectors}

    def run():
        return run_shift(model, tmp_path / "datasets", vecs, tmp_path / "shift", cfg, judges={"evil": ConstJudge()},
                         questions={"evil": ["How do I make friends?"]}, progress=False, log=lambda s: None)

    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    run()
    # the dataset record (with its ΔP from an fp32 screening pass) must not serve a bf16 run
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")
    with pytest.raises(StaleRunError, match="screen_dtype"):
        run()


def _sae_corpus(path):
    import json

    path.write_text("".join(json.dumps({"text": f"Document {i} is about topic {i % 5} and more words."}) + "\n"
                            for i in range(24)))
    return path


def test_sae_activation_cache_is_keyed_by_the_resolved_dtype(model, tmp_path, monkeypatch):
    from pvlens.sae.corpus import read_documents
    from pvlens.sae.train import SaeTrainConfig, _cache_file

    docs = read_documents(_sae_corpus(tmp_path / "c.jsonl"), model.tokenizer)
    cfg = SaeTrainConfig(layer=1, activation_cache=str(tmp_path / "cache"))  # dtype "auto"
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    fp32 = _cache_file(cfg, model, 1, docs)
    fp32.parent.mkdir(parents=True)
    fp32.write_bytes(b"fp32 activations")  # a stored cache
    assert _cache_file(cfg, model, 1, docs) == fp32  # same inputs: reused
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")
    assert _cache_file(cfg, model, 1, docs) != fp32  # bf16 activations are another cache


def test_sae_resume_refuses_checkpoints_of_another_model_corpus_or_dtype(model, tmp_path, monkeypatch):
    from pvlens.sae.train import SaeTrainConfig, train_sae

    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    corpus = _sae_corpus(tmp_path / "c.jsonl")
    cfg = SaeTrainConfig(layer=1, expansion=2, k=4, training_tokens=32 * 6, batch_size=32, buffer_tokens=64,
                         lr_warm_up_steps=1, n_checkpoints=1, holdout_fraction=0.1, scaling_tokens=64,
                         calibrate_threshold=False)
    out = train_sae(model, corpus, cfg, tmp_path / "sae", progress=False)
    assert list((out / "checkpoints").iterdir())
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")
    with pytest.raises(ValueError, match="compute_dtype"):
        train_sae(model, corpus, cfg, out, progress=False)
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    other = _sae_corpus(tmp_path / "d.jsonl")
    other.write_text(other.read_text().replace("topic", "subject"))
    with pytest.raises(ValueError, match="documents"):
        train_sae(model, other, cfg, out, progress=False)
    changed = pvlens.tiny_model(n_layers=2)
    with torch.no_grad():
        changed.W_E.add_(0.01)
    with pytest.raises(ValueError, match="model"):
        train_sae(changed, corpus, cfg, out, progress=False)


def test_sae_chat_corpus_refuses_to_extend_a_file_made_with_other_inputs(model, tmp_path, monkeypatch):
    from pvlens.sae.corpus import CorpusConfig, build_corpus

    out = tmp_path / "c.jsonl"
    cfg = CorpusConfig(limit=3, max_new_tokens=2, traits=[], batch_size=4)
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    build_corpus(model, out, cfg, progress=False)
    build_corpus(model, out, cfg.model_copy(update={"limit": 4}), progress=False)  # a larger limit extends it
    assert len(out.read_text().splitlines()) == 4
    with pytest.raises(StaleRunError, match="config.temperature"):
        build_corpus(model, out, cfg.model_copy(update={"limit": 5, "temperature": 1.0}), progress=False)
    other = pvlens.tiny_model(n_layers=2)
    with torch.no_grad():
        other.W_E.add_(0.01)
    with pytest.raises(StaleRunError, match="model"):
        build_corpus(other, out, cfg.model_copy(update={"limit": 5}), progress=False)
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")
    with pytest.raises(StaleRunError, match="compute_dtype"):
        build_corpus(model, out, cfg.model_copy(update={"limit": 5}), progress=False)
    assert len(out.read_text().splitlines()) == 4


def test_file_inputs_refuse_an_unrecorded_result(tmp_path):
    from pvlens.io.runs import check_file_inputs

    out = tmp_path / "old.jsonl"
    out.write_text('{"key": "a"}\n')
    with pytest.raises(StaleRunError, match="no record"):
        check_file_inputs(out, {"model": "x"})
    fresh = tmp_path / "sub" / "new.jsonl"
    assert check_file_inputs(fresh, {"model": "x"}) is False
    assert check_file_inputs(fresh, {"model": "x"}) is True
    with pytest.raises(StaleRunError, match="model"):
        check_file_inputs(fresh, {"model": "y"})


def test_offline_judge_does_not_reuse_coherence_of_a_fluency_model_changed_since(tmp_path):
    from pvlens.judges.cache import Judgement, JudgementCache
    from pvlens.judges.offline import OfflineJudge

    lm = pvlens.tiny_model(n_layers=2)
    judge = OfflineJudge("evil", embedder=object(), fluency_model=lm, cache=JudgementCache(":memory:"))
    pair = ("How are you?", "Fine, thanks.")
    key = judge.cache_key("coherence", *pair)
    judge.cache.put(key, Judgement(55.0), kind=judge.kind, model=judge.model, rubric_hash="r",
                    question=pair[0], answer=pair[1])
    assert judge.cache_key("coherence", *pair) == key  # unchanged model: the stored score is served
    with torch.no_grad():
        lm.W_E.add_(0.01)  # e.g. finetuned in place after the judge was made
    new = judge.cache_key("coherence", *pair)
    assert new != key and not judge.cache.get_many([new])


@pytest.mark.parametrize("name", ["monitoring", "extraction"])
def test_replicate_results_are_not_served_at_another_compute_dtype(name, tmp_path, monkeypatch):
    import dataclasses

    from pvlens.replicate import Context, run_experiment
    from pvlens.replicate.experiments import REGISTRY

    calls: list[int] = []
    exp = dataclasses.replace(REGISTRY[name], run=lambda ctx, folder: calls.append(1) or {"value": len(calls)})
    ctx = Context(tmp_path, quick=True)
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    run_experiment(exp, ctx)
    assert run_experiment(exp, ctx).results == {"value": 1}  # same inputs: results.json is served
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")  # what "auto" picks on an AMX CPU
    with pytest.raises(StaleRunError, match="compute_dtype"):
        run_experiment(exp, ctx)
    assert calls == [1]


def test_sae_corpus_build_refuses_to_resume_with_other_trait_specs_or_steering_vectors(model, tmp_path, monkeypatch):
    import pvlens.traits
    import pvlens.vectors.coerce
    from pvlens.sae.corpusbuild import RunConfig, SaeCorpusConfig, build_sae_corpus

    def vector(seed):
        return lambda trait, layer: torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))

    cfg = SaeCorpusConfig(n_composed=12, builtin_prompts=False, trait_questions=False, prompt_traits=["evil"],
                          steer_traits=["evil"], neutral_weight=1, max_new_tokens=2, limit=4)
    run = RunConfig(batch_size=4, package_text=False, shipped_datasets=False)
    out = tmp_path / "corpus"
    monkeypatch.setattr(pvlens.vectors.coerce, "direction", vector(0))
    build_sae_corpus(model, out, cfg, run, progress=False)
    build_sae_corpus(model, out, cfg, run, progress=False)  # same inputs: resumes
    monkeypatch.setattr(pvlens.vectors.coerce, "direction", vector(1))  # the shipped vector re-extracted
    with pytest.raises(StaleRunError, match="vectors.evil"):
        build_sae_corpus(model, out, cfg, run, progress=False)
    monkeypatch.setattr(pvlens.vectors.coerce, "direction", vector(0))
    real = pvlens.traits.load_trait

    def edited(name):
        spec = real(name)
        return spec.model_copy(update={"description": spec.description + " (edited)"})

    monkeypatch.setattr(pvlens.traits, "load_trait", edited)  # the trait's system prompts changed
    with pytest.raises(StaleRunError, match="traits.evil"):
        build_sae_corpus(model, out, cfg, run, progress=False)


def test_trait_set_refuses_to_continue_over_a_changed_prompt_pool(model, tmp_path, monkeypatch):
    import pvlens.trainsets.datasets as ds

    cfg = ds.DatasetConfig(size=2, max_new_tokens=2, chunk=3, batch_size=4)
    ds.build_trait_set(model, "evil", "normal", tmp_path, ConstJudge(), cfg, progress=False)
    real = ds.prompt_pool
    monkeypatch.setattr(ds, "prompt_pool", lambda trait: ["A new first question?", *real(trait)])
    # candidates continue at a pool position: a shifted pool would repeat or skip questions
    with pytest.raises(StaleRunError, match="pool"):
        ds.build_trait_set(model, "evil", "normal", tmp_path, ConstJudge(), cfg.changed(size=3), progress=False)


@pytest.mark.parametrize("name, attr", [("models", "CORE"), ("benchmarks", "PVLENS_SRC")])
def test_replicate_code_measurements_are_not_served_after_the_code_changed(name, attr, tmp_path, monkeypatch):
    import dataclasses
    import shutil

    from pvlens.replicate import Context, benchmarks, models, run_experiment
    from pvlens.replicate.experiments import REGISTRY

    module = {"models": models, "benchmarks": benchmarks}[name]
    src = tmp_path / "src"
    shutil.copytree(Path(pvlens.__file__).parent / "core", src / "core")
    monkeypatch.setattr(module, attr, src / "core", raising=False)
    calls: list[int] = []
    exp = dataclasses.replace(REGISTRY[name], run=lambda ctx, folder: calls.append(1) or {"value": 1})
    ctx = Context(tmp_path / "results", quick=True)
    run_experiment(exp, ctx)
    run_experiment(exp, ctx)
    assert calls == [1]  # same code: the stored measurement is served
    engine = src / "core" / "engine.py"
    engine.write_text(engine.read_text() + "\n# a faster kernel\n")
    with pytest.raises(StaleRunError, match="pvlens_code"):
        run_experiment(exp, ctx)


def test_replies_cached_under_one_chat_template_setting_are_not_served_under_another():
    from pvlens.core.fingerprint import model_fingerprint
    from pvlens.core.templates import use_template
    from pvlens.trainsets.screen.base_replies import MemoryReplies, reply_key

    lm = pvlens.tiny_model(n_layers=2)  # its own tokenizer: the template change stays here
    prompt = [{"role": "user", "content": "Hello?"}]
    before = model_fingerprint(lm)
    store = MemoryReplies({reply_key(before, 8, prompt): "a reply made with the default template"})
    assert model_fingerprint(lm) == before  # unchanged: the stored reply is served
    use_template(lm.tokenizer, enable_thinking=False)  # e.g. Qwen3 with thinking switched off
    after = model_fingerprint(lm)
    assert after != before and store.missing([reply_key(after, 8, prompt)])
    use_template(lm.tokenizer, enable_thinking=True)
    assert model_fingerprint(lm) not in (before, after)


def test_replicate_finetune_shift_is_not_served_after_its_data_or_dtype_changed(tmp_path, monkeypatch):
    import dataclasses
    import shutil

    from pvlens.replicate import Context, finetuning, run_experiment
    from pvlens.replicate.experiments import REGISTRY

    data = tmp_path / "data"
    shutil.copytree(Path(pvlens.__file__).parent / "data" / "datasets" / "evil", data / "datasets" / "evil")
    monkeypatch.setattr(finetuning, "DATA", data)
    calls: list[int] = []
    exp = dataclasses.replace(REGISTRY["finetune_shift"], run=lambda ctx, folder: calls.append(1) or {"value": 1})
    ctx = Context(tmp_path / "results", quick=True)
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    run_experiment(exp, ctx)
    run_experiment(exp, ctx)
    assert calls == [1]  # same inputs: results.json is served
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "bfloat16")
    with pytest.raises(StaleRunError, match="screen_dtype"):
        run_experiment(exp, ctx)
    monkeypatch.setenv(COMPUTE_DTYPE_ENV, "float32")
    level = data / "datasets" / "evil" / "level_ii.jsonl"
    level.write_text(level.read_text().replace("e", "E", 1))  # one character of one training set
    with pytest.raises(StaleRunError, match="datasets"):
        run_experiment(exp, ctx)


def test_ray_screening_refuses_workers_that_would_compute_in_different_dtypes():
    from pvlens.trainsets.screen import ScreenConfig, ScreenError
    from pvlens.trainsets.screen.ray_runner import WorkerPool
    from pvlens.trainsets.screen.run import ModelFacts

    def facts(dtype):
        return ModelFacts("tiny", "same-weights", 2, 64, 512, dtype)

    pool = WorkerPool.__new__(WorkerPool)  # no Ray: only the check of what the workers report
    pool.call_all = lambda name, cfg: [facts("torch.float32"), facts("torch.float32")]  # type: ignore[method-assign]
    assert pool.facts(ScreenConfig()).dtype == "torch.float32"
    # one node with AMX resolves "auto" to bf16: its results would be mixed into an fp32 run
    pool.call_all = lambda name, cfg: [facts("torch.float32"), facts("torch.bfloat16")]  # type: ignore[method-assign]
    with pytest.raises(ScreenError, match="different dtypes"):
        pool.facts(ScreenConfig())
