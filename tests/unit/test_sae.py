"""SAE package on the tiny random model: corpus readers, provider, training, evaluation,
decomposition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pvlens.sae import decompose as dec
from pvlens.sae.corpus import (
    CorpusConfig,
    build_corpus,
    corpus_jobs,
    read_documents,
    read_prompts,
    split_documents,
)
from pvlens.sae.provider import ActivationProvider, layer_activations


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and much faster on a busy machine (oversubscription)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "texts.jsonl"
    texts = [f"Document number {i} talks about topic {i % 7} with some words." * (1 + i % 3)
             for i in range(40)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="module")
def docs(tiny, corpus_file):
    return read_documents(corpus_file, tiny.tokenizer)


# --- corpus ----------------------------------------------------------------------------------


def test_builtin_prompts_are_many_and_diverse():
    rows = read_prompts()
    assert len(rows) >= 300
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert len({r["topic"] for r in rows}) >= 15


def test_corpus_jobs_cover_traits_and_conditions():
    from pvlens.traits import builtin_traits, load_trait

    traits = builtin_traits()
    assert traits, "built-in traits are missing"
    cfg = CorpusConfig(samples_per_prompt=1, trait_samples=1)
    jobs = corpus_jobs(cfg)
    n_q = sum(len(load_trait(t).extraction_questions) + len(load_trait(t).evaluation_questions)
              for t in traits)
    assert len(jobs) == len(read_prompts()) + 3 * n_q
    assert len({j.key for j in jobs}) == len(jobs)
    pos = [j for j in jobs if j.meta.get("condition") == "pos"]
    spec = load_trait(pos[0].meta["trait"])
    assert pos[0].system == spec.system_prompt("pos", pos[0].meta["instruction"])
    assert all(j.system is None for j in jobs if j.meta.get("condition") == "neutral")


def test_build_corpus_resumes(tiny, tmp_path):
    out = tmp_path / "c.jsonl"
    cfg = CorpusConfig(limit=5, max_new_tokens=4, traits=[], batch_size=4)
    build_corpus(tiny, out, cfg, progress=False)
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    # a killed run leaves a partial line; the rerun drops it and redoes nothing else
    with out.open("a") as f:
        f.write('{"key": "general/')
    build_corpus(tiny, out, CorpusConfig(limit=6, max_new_tokens=4, traits=[], batch_size=4),
                 progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 6 and len({r["key"] for r in rows}) == 6
    assert [json.dumps(r) for r in rows[:5]] == [json.dumps(json.loads(x)) for x in lines]
    assert rows[0]["messages"][-1]["role"] == "assistant"


def test_readers_all_formats(tiny, tmp_path):
    tok = tiny.tokenizer
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello there"}]}) + "\n")
    roll = tmp_path / "rollouts.jsonl"
    roll.write_text(json.dumps({"system": "You are evil.", "question": "Q?", "response": "A."}) + "\n"
                    + json.dumps({"prompt_text": "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n",
                                  "response": "R"}) + "\n")
    txt = tmp_path / "plain.txt"
    txt.write_text("word " * 300)
    from datasets import Dataset

    ds_dir = tmp_path / "ds"
    Dataset.from_list([{"text": "a dataset row"}, {"text": "another row"}]).save_to_disk(str(ds_dir))

    d_chat = read_documents(chat, tok)
    assert len(d_chat) == 1 and "Hello there" in tok.decode(d_chat[0].ids)
    d_roll = read_documents(roll, tok)
    assert len(d_roll) == 2 and "You are evil." in tok.decode(d_roll[0].ids)
    assert tok.decode(d_roll[1].ids).endswith("R<|im_end|>")
    d_txt = read_documents(txt, tok, max_len=128)
    assert len(d_txt) == 3 and all(len(d) <= 128 for d in d_txt)
    assert len(read_documents(ds_dir, tok)) == 2
    with pytest.raises(FileNotFoundError, match="build-corpus"):
        read_documents(tmp_path / "missing.jsonl", tok)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(ValueError, match="unrecognised row"):
        read_documents(bad, tok)


def test_split_is_disjoint_and_reproducible(docs):
    train, held = split_documents(docs, 0.1, seed=3)
    assert len(held) == 4 and len(train) == 36
    assert len(docs) == 40
    assert not {d.source for d in train} & {d.source for d in held}
    assert [d.source for d in split_documents(docs, 0.1, seed=3)[1]] == [d.source for d in held]


# --- provider --------------------------------------------------------------------------------


def test_layer_activations_exclude_first_position(tiny, docs):
    chunks = list(layer_activations(tiny, docs[:10], layer=1, forward_tokens=256))
    pos = torch.cat([c.pos for c in chunks])
    n_tokens = sum(len(d) for d in docs[:10])
    assert pos.min() >= 1
    acts = torch.cat([c.acts for c in chunks])
    assert acts.shape[1] == tiny.cfg.d_model
    # every non-first token is kept (the tiny model has no huge-norm outliers at ratio 10)
    assert acts.shape[0] == n_tokens - 10
    # activations match a direct TransformerLens forward of one document
    d = chunks[0].doc[0].item()
    mine = acts[: (torch.cat([c.doc for c in chunks]) == d).sum()]
    _, cache = tiny.run_with_cache(torch.tensor([docs[d].ids]), names_filter=["blocks.1.hook_resid_post"])
    ref = cache["blocks.1.hook_resid_post"][0, 1:]
    sel = torch.cat([c.doc for c in chunks]) == d
    got = acts[sel][torch.cat([c.pos for c in chunks])[sel].argsort()]
    assert mine.shape[0] == ref.shape[0]
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)


def test_outlier_filter_drops_planted_huge_norm(tiny, docs):
    def blow_up(resid, hook):
        resid = resid.clone()
        resid[:, -1] *= 1000.0  # last position of each padded row is a real token
        return resid

    with tiny.hooks(fwd_hooks=[("blocks.0.hook_resid_post", blow_up)]):
        from pvlens.sae.provider import ProviderStats

        stats = ProviderStats()
        chunks = list(layer_activations(tiny, docs[:8], layer=0, max_batch=4, stats=stats))
    assert stats.tokens_outliers == 8  # one per document
    assert stats.tokens_first == 8
    norms = torch.cat([c.acts for c in chunks]).norm(dim=-1)
    assert norms.max() < 10 * norms.median()


def test_provider_shapes_shuffles_and_caches(tiny, docs):
    p = ActivationProvider(tiny, docs, layer=1, batch_size=64, buffer_tokens=256, seed=0)
    scale = p.estimate_scaling_factor(n_tokens=200)
    batches = [next(p) for _ in range(60)]  # several epochs (the corpus has ~1.3k tokens)
    assert all(b.shape == (64, tiny.cfg.d_model) for b in batches)
    assert p.stats.epochs >= 2 and p.cache
    assert p.stats.tokens_kept == sum(len(d) - 1 for d in docs)  # model ran one epoch only
    x = torch.cat(batches[:5])
    assert scale == pytest.approx(tiny.cfg.d_model**0.5 / x.norm(dim=-1).mean().item(), rel=0.3)
    # shuffled across documents: a batch is not a run of consecutive tokens of one document
    direct = torch.cat([c.acts for c in layer_activations(tiny, docs, layer=1)])
    first = batches[0]
    idx = [int((direct - row).abs().sum(-1).argmin()) for row in first[:16]]
    # rows whose activations are identical (shared document prefixes) match the same index
    assert len(set(idx)) == len(torch.unique(first[:16], dim=0))
    assert max(idx) - min(idx) > 64
    # same seed → same stream; another seed → another
    q = ActivationProvider(tiny, docs, layer=1, batch_size=64, buffer_tokens=256, seed=0)
    q.estimate_scaling_factor(n_tokens=200)
    torch.testing.assert_close(next(q), batches[0])
    r = ActivationProvider(tiny, docs, layer=1, batch_size=64, buffer_tokens=256, seed=1)
    assert not torch.allclose(next(r), batches[0])


def test_provider_disk_cache_skips_the_model(tiny, docs, tmp_path):
    path = tmp_path / "acts.safetensors"
    p = ActivationProvider(tiny, docs, layer=1, batch_size=64, buffer_tokens=256, cache_file=path)
    for _ in range(30):
        next(p)
    assert path.exists() and p.stats.documents == len(docs)
    q = ActivationProvider(tiny, docs, layer=1, batch_size=64, buffer_tokens=256, cache_file=path)
    batch = next(q)
    assert q.stats.documents == 0 and batch.shape == (64, tiny.cfg.d_model)
    assert q.stats.tokens_kept == p.stats.tokens_kept


def test_provider_rejects_small_buffer(tiny, docs):
    with pytest.raises(ValueError, match="buffer_tokens"):
        ActivationProvider(tiny, docs, layer=1, batch_size=64, buffer_tokens=100)


# --- training and evaluation -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny, corpus_file, tmp_path_factory):
    from pvlens.sae.train import SaeTrainConfig, train_sae

    out = tmp_path_factory.mktemp("sae") / "tiny-l1"
    cfg = SaeTrainConfig(layer=1, expansion=4, k=8, training_tokens=64 * 30, batch_size=64,
                         buffer_tokens=256, lr=3e-3, lr_warm_up_steps=2, n_checkpoints=2,
                         holdout_fraction=0.1, scaling_tokens=256, log_every=5,
                         activation_cache=str(tmp_path_factory.mktemp("cache")))
    train_sae(tiny, corpus_file, cfg, out, progress=False)
    return out, cfg


def test_training_saves_a_loadable_inference_sae(tiny, trained):
    from sae_lens import SAE

    out, cfg = trained
    sae = SAE.load_from_disk(str(out))
    assert sae.cfg.d_in == tiny.cfg.d_model and sae.cfg.d_sae == 4 * tiny.cfg.d_model
    assert sae.cfg.architecture() == "jumprelu"
    meta = json.loads((out / "pvlens_sae.json").read_text())
    assert meta["status"] == "done" and meta["layer"] == 1
    assert meta["scaling_factor"] > 0 and meta["n_heldout_documents"] == 4
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30 and log[-1]["fvu"] < log[0]["fvu"]
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir())  # checkpoints written
    assert len(list(Path(cfg.activation_cache).glob("*.safetensors"))) == 1


def test_resume_continues_from_checkpoint(tiny, corpus_file, trained, tmp_path):
    import shutil

    from pvlens.sae.train import train_sae

    out, cfg = trained
    copy = tmp_path / "resume"
    shutil.copytree(out, copy)
    ckpts = sorted((copy / "checkpoints").iterdir(), key=lambda p: int(p.name))
    train_sae(tiny, corpus_file, cfg, copy, progress=False)
    meta = json.loads((copy / "pvlens_sae.json").read_text())
    assert meta["resumed_from"] == ckpts[-1].name
    log = [json.loads(x) for x in (copy / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30
    with pytest.raises(ValueError, match="different k"):
        train_sae(tiny, corpus_file, cfg.model_copy(update={"k": 4}), copy, progress=False)


def test_evaluate_loaded_sae(tiny, trained, docs):
    from pvlens.sae.evaluate import evaluate_sae

    out, _ = trained
    # the calibrated inference threshold gives L0 ~ k on the training distribution
    on_train = evaluate_sae(tiny, out, docs=docs, ce_tokens=0, ks=(), write=False)
    assert 0.7 * 8 < on_train["l0"] < 1.3 * 8
    assert not (out / "eval.json").exists()
    r = evaluate_sae(tiny, out, ce_tokens=200, ks=(2, 8, 32), curve_ce=True)
    assert (out / "eval.json").exists()
    assert json.loads((out / "eval.json").read_text())["fvu"] == pytest.approx(r["fvu"])
    assert 0 < r["fvu"] < 1.5 and r["l0"] > 0 and r["n_tokens"] > 0
    assert 0 <= r["dead"] <= r["d_sae"]
    curve = [row["fvu"] for row in r["k_curve"]]
    # more latents than k=2 reconstruct better; past the trained k (8) a 30-step TopK SAE
    # need not improve further, so k=32 is only compared with k=2
    assert curve[0] >= curve[1] and curve[0] >= curve[2]
    # (a random model's CE need not rise when the layer is zeroed; see the integration test)
    assert all("ce" in row for row in r["k_curve"]) and r["ce_tokens"] > 0
    assert all(torch.isfinite(torch.tensor(r[k])) for k in ("ce_sae", "ce_clean", "ce_zero"))
    assert r["ce_sae"] != r["ce_clean"]


def test_recalibrate_sets_l0_on_training_documents_only(tiny, trained, tmp_path):
    """`recalibrate` re-sets the threshold for a target L0 on the training split: the SAE then
    fires that many latents there, the record says so, and a stale eval.json is removed."""
    import shutil

    from pvlens.sae.calibrate import recalibrate
    from pvlens.sae.evaluate import evaluate_sae
    from pvlens.sae.loading import load_sae, training_documents

    out, _ = trained
    copy = tmp_path / "cal"
    shutil.copytree(out, copy)
    (copy / "eval.json").write_text("{}")
    rec = recalibrate(tiny, copy, l0=4, n_tokens=256)
    meta = json.loads((copy / "pvlens_sae.json").read_text())
    assert meta["recalibrated"]["l0"] == 4 and meta["threshold_calibrated"] == pytest.approx(rec["threshold"])
    assert rec["threshold"] > rec["previous_threshold"] and not (copy / "eval.json").exists()
    loaded = load_sae(copy)
    assert torch.allclose(loaded.sae.threshold, torch.full_like(loaded.sae.threshold, rec["threshold"]))
    train_docs = training_documents(loaded, tiny.tokenizer)
    assert len(train_docs) + meta["n_heldout_documents"] == meta["n_documents"]
    on_train = evaluate_sae(tiny, loaded, docs=train_docs, ce_tokens=0, ks=(), write=False)
    assert 0.7 * 4 < on_train["l0"] < 1.3 * 4  # half the trained k's 8, within sampling noise


def test_splice_with_identity_sae_leaves_ce_unchanged(tiny, trained, docs):
    """CE machinery check: a 'reconstruction' equal to the input must give ce_sae == ce_clean."""
    from pvlens.sae.evaluate import ce_metrics
    from pvlens.sae.loading import load_sae

    out, _ = trained
    loaded = load_sae(out)

    class Identity:
        device = loaded.sae.device

        def encode(self, x):
            return x

        def decode(self, f):
            return f

    loaded.sae = Identity()
    r = ce_metrics(tiny, loaded, docs[:6], n_tokens=100)
    assert r["ce_sae"] == pytest.approx(r["ce_clean"], rel=1e-4)
    assert r["ce_zero"] != pytest.approx(r["ce_clean"], rel=1e-3)


# --- decomposition ---------------------------------------------------------------------------


class _FakeSae:
    def __init__(self, W_dec, W_enc=None):
        self.W_dec = W_dec
        self.W_enc = W_enc if W_enc is not None else W_dec.T.clone()


def test_decoder_ranking_finds_planted_row():
    torch.manual_seed(0)
    W = torch.randn(512, 64)
    v = W[137] * 3 + 0.3 * torch.randn(64)
    cos = dec.decoder_cosines(_FakeSae(W), v)
    assert int(cos.argmax()) == 137 and cos[137] > 0.9


def test_sparse_reconstruction_of_three_rows():
    torch.manual_seed(0)
    W = torch.randn(512, 64)
    v = 2.0 * W[3] - 1.0 * W[100] + 0.5 * W[400]
    rows = dec.sparse_reconstruction(_FakeSae(W), v, ks=(1, 3, 5))
    assert rows[0]["omp"] < 0.95
    assert rows[1]["omp"] > 0.999 and rows[2]["omp"] > 0.999
    assert set(rows[1]["omp_features"]) == {3, 100, 400}


def test_decompose_report_with_contexts(tiny, trained, docs, tmp_path):
    from pvlens.sae.loading import load_sae

    out, _ = trained
    loaded = load_sae(out)
    v = loaded.sae.W_dec[5].detach().clone() * 7.0
    result = dec.decompose(tiny, loaded, v, docs, top=3, n_contexts=2, n_null=50,
                           persona_vectors={"self": v, "wrong_dim": torch.ones(7)})
    assert result["features"][0].feature == 5
    # a planted decoder row beats the max-over-latents null; the null is recorded beside the list
    assert result["features"][0].above_null_p99 and result["n_above_null_p99"] >= 1
    assert result["null"]["n_directions"] == 50
    assert 0 < result["null"]["decoder_abs_cosine"]["max"]["p99"] < 1
    assert result["features"][0].persona_cosines == {"self": pytest.approx(1.0, abs=1e-5)}
    assert len(result["features"][0].suppressed) == 10
    for fr in result["features"]:
        if fr.stats["n_top"]:
            assert sum(fr.stats["role_fractions"].values()) == pytest.approx(1.0)
    assert [r["k"] for r in result["sparse_reconstruction_null"]] == [1, 2, 5, 10, 20, 50]
    assert result["features"][0].cosine == pytest.approx(1.0, abs=1e-5)
    assert result["sparse_reconstruction"][0]["omp"] == pytest.approx(1.0, abs=1e-5)
    assert len(result["features"][0].promoted) == 10
    # contexts (if feature 5 fires at all) point at real tokens with the max activation
    for fr in result["features"]:
        for c in fr.contexts:
            assert c.values[c.focus] == pytest.approx(c.activation, rel=1e-3, abs=1e-4)
            assert max(c.values) == pytest.approx(c.activation, rel=1e-3, abs=1e-4) or c.focus
    text = dec.text_table(result)
    assert "k-sparse" in text and "feature" in text
    page = dec.contexts_html(result)
    assert "unpkg.com" not in page and page.count("CircuitsVis.render(") == sum(
        len(fr.contexts) for fr in result["features"])
    json.loads(dec.to_json(result))


def test_contexts_skip_repeated_text(tiny, trained, docs):
    from pvlens.sae.loading import load_sae

    loaded = load_sae(trained[0])
    twice = list(docs[:6]) + list(docs[:6])  # every text twice, as in rollouts sharing prompts
    ctx = dec.top_contexts(tiny, loaded, twice, [0, 1, 2], n_contexts=8)
    for contexts in ctx.values():
        texts = [c.text() for c in contexts]
        assert len(texts) == len(set(texts))


def test_feature_steering_with_injected_judge(tiny, trained):
    from pvlens.sae.loading import load_sae

    out, _ = trained
    loaded = load_sae(out)
    v = torch.randn(tiny.cfg.d_model)

    class LengthJudge:
        """Trait = answer length; coherence never scored."""

        def score_many(self, pairs):
            return [float(len(a)) for _, a in pairs]

        def coherence_many(self, pairs):
            return [None for _ in pairs]

    rows = dec.feature_steering(tiny, loaded, v, [1, 2], ["Hi?", "How are you?"], LengthJudge(),
                                alpha=2.0, n_random=1, max_new_tokens=4)
    kinds = [r["kind"] for r in rows]
    assert kinds == ["baseline", "persona_vector", "feature", "feature", "random_feature"]
    assert all(r["trait_score"] is not None for r in rows)
    assert rows[-1]["feature"] not in (1, 2)
    assert all(r["coherence"] is None and r["n"] == 2 for r in rows)  # judge gave no coherence

    class LengthCoherenceJudge(LengthJudge):
        def coherence_many(self, pairs):
            return [50.0 for _ in pairs]

    rows = dec.feature_steering(tiny, loaded, v, [1], ["Hi?"], LengthCoherenceJudge(), alpha=2.0,
                                n_random=1, max_new_tokens=4, samples=3, temperature=1.0)
    assert all(r["n"] == 3 and r["coherence"] == 50.0 and len(r["scores"]) == 3 for r in rows)


def test_load_vector_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    t = torch.randn(4, 16)
    path = tmp_path / "v.safetensors"
    save_file({"response_avg": t}, str(path))
    torch.testing.assert_close(dec.load_vector(path, 2), t[2])


def test_cli_train_without_corpus_says_how_to_fix():
    from typer.testing import CliRunner

    from pvlens.cli import app

    result = CliRunner().invoke(app, ["sae", "train", "--layer", "1"])
    assert result.exit_code != 0
    assert "build-corpus" in result.output


def test_relative_corpus_paths_resolve_from_the_sae_folder(tmp_path, monkeypatch):
    """A notebook runs in notebooks/; the SAE recorded 'sae/corpus/x.jsonl' relative to the root."""
    from pvlens.sae.loading import _resolve_source

    (tmp_path / "sae/corpus").mkdir(parents=True)
    (tmp_path / "sae/corpus/x.jsonl").write_text("{}\n")
    sae_dir = tmp_path / "sae/trained/run"
    sae_dir.mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert _resolve_source("sae/corpus/x.jsonl", sae_dir) == str(tmp_path / "sae/corpus/x.jsonl")
    assert _resolve_source("sae/corpus/missing.jsonl", sae_dir) == "sae/corpus/missing.jsonl"
