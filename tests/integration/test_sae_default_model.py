"""SAE pipeline on the default model: corpus → short training → evaluation of the loaded SAE."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model():
    import pvlens

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches on a shared CPU: one thread avoids oversubscription
    yield pvlens.load_model()
    torch.set_num_threads(n)


def test_corpus_train_eval(model, tmp_path):
    from pvlens.sae.corpus import CorpusConfig, build_corpus, read_documents
    from pvlens.sae.evaluate import evaluate_sae
    from pvlens.sae.provider import layer_activations
    from pvlens.sae.train import SaeTrainConfig, train_sae

    corpus = tmp_path / "corpus.jsonl"
    build_corpus(model, corpus, CorpusConfig(limit=16, max_new_tokens=40, batch_size=16),
                 progress=False)
    docs = read_documents(corpus, model.tokenizer)
    assert len(docs) == 16

    # the measured reason for skip_first: position 0 is a huge-norm attention sink at layer 15
    chunk = next(iter(layer_activations(model, docs[:4], 15, skip_first=0, max_norm_ratio=None)))
    norms = chunk.acts.norm(dim=-1)
    first = norms[chunk.pos == 0]
    assert first.min() > 20 * norms[chunk.pos > 0].median()

    out = tmp_path / "sae"
    cfg = SaeTrainConfig(layer=15, expansion=2, k=16, training_tokens=256 * 40, batch_size=256,
                         buffer_tokens=1024, lr=2e-3, lr_warm_up_steps=5, holdout_fraction=0.125,
                         scaling_tokens=512, n_checkpoints=1, dead_feature_window=20)
    train_sae(model, corpus, cfg, out, progress=False)
    meta = json.loads((out / "pvlens_sae.json").read_text())
    assert meta["provider_stats"]["tokens_outliers"] == 0  # only position 0 is extreme here
    # activations are ~165 in norm, so sqrt(576)/mean-norm is well below 1
    assert 0.05 < meta["scaling_factor"] < 0.5

    r = evaluate_sae(model, out, ce_tokens=256, ks=(8, 64))
    saved = json.loads((out / "eval.json").read_text())
    for key in ("fvu", "l0", "ce_clean", "ce_sae", "ce_zero", "ce_loss_score"):
        assert math.isfinite(saved[key]), key
    assert saved["fvu"] == pytest.approx(r["fvu"])
    assert r["fvu"] < 1.0  # better than predicting the mean
    assert r["ce_zero"] > r["ce_clean"] + 1.0  # zeroing a middle layer wrecks a real model
    assert r["ce_sae"] < r["ce_zero"]
    assert all(math.isfinite(row["fvu"]) for row in r["k_curve"])
    assert 0.5 * cfg.k < r["l0"] < 2 * cfg.k  # calibrated threshold: L0 near k on new documents


def test_shipped_saes_reconstruct_fresh_text_and_rank_evil_features_above_the_null(model):
    """The shipped SAEs, loaded by name, on text written here (not in their corpus): they
    reconstruct it (FVU well under the variance, L0 near the calibrated 62), and at layer 15 the
    shipped evil vector's best-aligned features beat the random-direction null."""
    from pvlens.sae import decompose as dec
    from pvlens.sae.corpus import Document
    from pvlens.sae.evaluate import evaluate_sae
    from pvlens.sae.loading import resolve_sae
    from pvlens.sae.shipped import shipped_sae_names
    from pvlens.vectors.coerce import direction

    texts = ["The lighthouse keeper wrote a letter every evening, though no ship had passed in years.",
             "To repot a cactus, wear thick gloves and wrap a folded newspaper around the stem.",
             "Honestly, I think you should apologise to your sister before the wedding.",
             "def mean(xs):\n    return sum(xs) / len(xs)  # the arithmetic mean of a list"]
    docs = [Document(model.tokenizer(t)["input_ids"], f"fresh/{i}") for i, t in enumerate(texts)]
    assert shipped_sae_names() == ["smollm2-135m-layer15", "smollm2-135m-layer24", "smollm2-135m-layer6"]
    for name in shipped_sae_names():
        loaded = resolve_sae(name)
        r = evaluate_sae(model, loaded, docs, n_tokens=10_000, ce_tokens=0, ks=(), write=False)
        assert r["fvu"] < 0.35 and 30 < r["l0"] < 120, (name, r["fvu"], r["l0"])
    loaded = resolve_sae("smollm2-135m-layer15")
    result = dec.decompose(model, loaded, direction("evil", 15), None, top=5, n_null=200)
    assert result["n_above_null_p99"] >= 3
