"""Feature dashboards and the pretrained-SAE route, on the tiny model with a hand-made SAE
saved in sae_lens's on-disk format (no hub, no training)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig

from pvlens.sae import decompose as dec
from pvlens.sae.corpus import Document
from pvlens.sae.dashboard import dashboard_html, histogram_svg, show
from pvlens.sae.loading import (
    LoadedSae,
    layer_from_hook,
    load_pretrained,
    local_converter,
    resolve_sae,
    split_sae_spec,
)


@pytest.fixture(scope="module")
def tiny_sae(tiny, tmp_path_factory):
    """A JumpReLU SAE on the tiny model's block 1, saved with sae_lens under a hub-like layout
    <root>/<owner>/<repo>/<sae_id>/."""
    torch.manual_seed(0)
    d = tiny.cfg.d_model
    cfg = JumpReLUSAEConfig(d_in=d, d_sae=4 * d)
    cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, 4 * d) / d**0.5)
        sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=-1, keepdim=True))
        sae.threshold.fill_(0.05)
    root = tmp_path_factory.mktemp("mirror")
    folder = root / "someone" / "tiny-saes" / "layer_1"
    sae.save_model(str(folder))
    return root, folder, sae


def test_layer_from_hook():
    assert layer_from_hook("blocks.15.hook_resid_post") == 15
    assert layer_from_hook("blocks.15.hook_resid_pre") == 14  # same tensor
    assert layer_from_hook("blocks.0.hook_resid_pre") is None
    assert layer_from_hook("blocks.3.attn.hook_z") is None


def test_split_sae_spec_known_release_and_repo_ids():
    # a release in sae_lens's directory: the id may contain slashes (gemma-scope style)
    assert split_sae_spec("gpt2-small-res-jb/blocks.8.hook_resid_pre") == ("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    assert split_sae_spec("someone/tiny-saes/layer_1") == ("someone/tiny-saes", "layer_1")
    with pytest.raises(ValueError, match="RELEASE/ID"):
        split_sae_spec("noslash")


def test_from_pretrained_route_offline(tiny_sae, monkeypatch):
    """`SAE.from_pretrained` with a converter that reads sae_lens's on-disk format: the same
    weights as `SAE.load_from_disk`, the layer from the hook name."""
    root, folder, sae = tiny_sae
    loaded = load_pretrained("someone/tiny-saes", "layer_1", converter=local_converter(root))
    assert loaded.layer == 1 and loaded.meta["release"] == "someone/tiny-saes"
    ref = SAE.load_from_disk(str(folder))
    assert torch.equal(loaded.sae.W_dec, ref.W_dec) and torch.equal(loaded.sae.threshold, ref.threshold)
    monkeypatch.setenv("PVLENS_SAE_MIRROR", str(root))
    via_spec = resolve_sae("someone/tiny-saes/layer_1")
    assert torch.equal(via_spec.sae.W_enc, ref.W_enc)
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        resolve_sae("someone/tiny-saes/layer_9")


def test_dashboard_page(tiny, tiny_sae):
    root, folder, sae = tiny_sae
    loaded = LoadedSae(SAE.load_from_disk(str(folder)), 1, folder, {})
    texts = ["The cat sat on the mat and looked out of the window.", "Numbers: 1 2 3 4 5 6 7 8 9."] * 4
    docs = [Document(tiny.tokenizer(t)["input_ids"], f"d{i}") for i, t in enumerate(texts)]
    v = loaded.sae.W_dec[3].detach().clone() * 5
    result = dec.decompose(tiny, loaded, v, docs, top=3, n_contexts=2, n_null=30,
                           persona_vectors={"evilish": v})
    page = dashboard_html(result)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    assert page.count("class='feat'") == 3 and "feature 3 " in page
    assert "&gt; null p99" in page  # the planted feature is marked above the null
    assert "evilish" in page and "suppresses" in page and "k-sparse" in page
    # every context token is shaded and the max token boxed
    n_ctx = sum(len(fr.contexts) for fr in result["features"])
    assert page.count("tok focus") == n_ctx
    # the page is the same from the saved JSON (what `pvlens sae dashboard` reads)
    assert dashboard_html(json.loads(dec.to_json(result))) == page
    assert "<svg" in show(result).data


def test_histogram_svg_scales_bars():
    svg = histogram_svg({"counts": [1, 4, 2], "edges": [0.0, 1.0, 2.0, 3.0]}, width=90, height=40)
    heights = [float(h) for h in re.findall(r"height='([\d.]+)' fill", svg)]
    assert heights == [10.0, 40.0, 20.0]
    assert "never active" in histogram_svg({"counts": [0, 0], "edges": [0, 1, 2]})


def test_cli_dashboard_from_json(tiny, tiny_sae, tmp_path):
    from typer.testing import CliRunner

    from pvlens.cli import app

    _, folder, _ = tiny_sae
    loaded = LoadedSae(SAE.load_from_disk(str(folder)), 1, folder, {})
    result = dec.decompose(tiny, loaded, torch.randn(tiny.cfg.d_model), None, top=2, n_null=10)
    path = tmp_path / "decomposition.json"
    path.write_text(dec.to_json(result))
    res = CliRunner().invoke(app, ["sae", "dashboard", str(path), "--out", str(tmp_path / "p.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.html").read_text().count("class='feat'") == 2


def test_publish_and_load_a_shipped_sae_by_name(tiny_sae, tmp_path, monkeypatch):
    """`publish_sae` copies weights and records only; `resolve_sae(name)` and `pvlens sae list`
    find it by its short name; an unknown name lists what ships."""
    from pvlens.sae import shipped

    _, folder, _ = tiny_sae
    trained = tmp_path / "trained"
    trained.mkdir()
    for f in ("cfg.json", "sae_weights.safetensors"):
        (trained / f).write_bytes((folder / f).read_bytes())
    (trained / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="pvlens_sae.json"):
        shipped.publish_sae(trained, "tiny-layer1", root=tmp_path / "saes")
    (trained / "pvlens_sae.json").write_text(json.dumps({"layer": 1, "train_config": {"k": 4}, "model_name": "tiny"}))
    dest = shipped.publish_sae(trained, "tiny-layer1", {"fvu": 0.1, "l0": 4.0, "dead": 3, "d_sae": 64,
                                                        "ce_loss_score": 0.97}, root=tmp_path / "saes")
    assert sorted(p.name for p in dest.iterdir()) == ["cfg.json", "eval.json", "pvlens_sae.json",
                                                      "sae_weights.safetensors"]
    monkeypatch.setattr(shipped, "shipped_root", lambda: tmp_path / "saes")
    assert shipped.shipped_sae_names() == ["tiny-layer1"]
    loaded = resolve_sae("tiny-layer1")
    assert loaded.layer == 1 and torch.equal(loaded.sae.W_dec, SAE.load_from_disk(str(folder)).W_dec)
    s = shipped.shipped_sae_summary("tiny-layer1")
    assert s["k"] == 4 and s["dead_fraction"] == pytest.approx(3 / s["d_sae"]) and s["d_sae"] == 4 * 64 and s["ce_loss_score"] == 0.97
    with pytest.raises(FileNotFoundError, match="shipped: tiny-layer1"):
        shipped.shipped_sae_path("nope")
    with pytest.raises(ValueError, match="tiny-layer1"):
        resolve_sae("nope")


def test_the_shipped_saes_load_with_sae_lens():
    """Every SAE in pvlens/data/saes loads with `SAE.load_from_disk` and reads the layer its name says."""
    from pvlens.sae.shipped import shipped_sae_names, shipped_sae_path

    names = shipped_sae_names()
    assert len(names) >= 3
    for name in names:
        sae = SAE.load_from_disk(str(shipped_sae_path(name)))
        layer = int(name.rsplit("layer", 1)[1])
        assert sae.cfg.metadata.hook_name == f"blocks.{layer}.hook_resid_post" and sae.cfg.d_in == 576
