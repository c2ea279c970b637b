"""Default model: a few steered and system-prompted corpus replies, and a decomposition of the
shipped evil vector with its null, role fractions and dashboard (hand-made SAE; no training)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model():
    import pvlens

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield pvlens.load_model()
    torch.set_num_threads(n)


def test_steered_corpus_and_decomposition_dashboard(model, tmp_path):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    from pvlens.sae import decompose as dec
    from pvlens.sae.corpus import read_documents
    from pvlens.sae.corpusbuild import RunConfig, SaeCorpusConfig, build_sae_corpus
    from pvlens.sae.dashboard import dashboard_html
    from pvlens.sae.loading import LoadedSae
    from pvlens.vectors.coerce import direction

    # 4 prompts over the cycle [evil:pos, evil:neg, steer:evil:+, steer:evil:-]: one of each
    cfg = SaeCorpusConfig(n_composed=4, builtin_prompts=False, trait_questions=False, prompt_traits=["evil"],
                          steer_traits=["evil"], neutral_weight=0, max_new_tokens=12)
    m = build_sae_corpus(model, tmp_path / "c", cfg, RunConfig(batch_size=4, package_text=False,
                                                               shipped_datasets=False), progress=False)
    assert m["generated_replies"] == 4 and m["sources"]["generated/steered"]["rows"] == 2
    docs = read_documents(tmp_path / "c" / "corpus.jsonl", model.tokenizer)

    torch.manual_seed(0)
    d = model.cfg.d_model
    sae_cfg = JumpReLUSAEConfig(d_in=d, d_sae=2 * d)
    sae = JumpReLUSAE(sae_cfg)
    with torch.no_grad():
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(2 * d, d), dim=-1))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.threshold.fill_(1.0)
    loaded = LoadedSae(sae, 15, None, {})
    v = direction("evil", 15)
    result = dec.decompose(model, loaded, v, docs, top=4, n_contexts=2, n_null=50)
    # a random dictionary: the shipped vector's best cosine is at chance level
    assert result["null"]["decoder_abs_cosine"]["max"]["p50"] < 0.3
    assert result["features"][0].cosine < result["null"]["decoder_abs_cosine"]["max"]["p99"] + 0.05
    assert any(fr.stats["n_top"] for fr in result["features"])
    assert "class='feat'" in dashboard_html(result)
