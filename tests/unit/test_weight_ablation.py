"""Weight-level directional ablation equals hook-based ablation (tiny models, both norm types)."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import pvlens
from pvlens.core.steering import Ablation, fwd_hooks
from pvlens.core.weight_ablation import (
    ablate_direction_in_weights,
    load_ablated,
    save_ablated,
    writing_parameters,
)
from pvlens.errors import InputError


def _with_random_biases(model: HookedTransformer) -> HookedTransformer:
    """Random writing biases, so their ablation is exercised (tiny_model starts them at 0)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("b_O", "b_out")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def _gpt2_like(processed: bool) -> HookedTransformer:
    """A random LayerNorm model with absolute positions; `processed` folds LN and centres writes."""
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=50,
                                  n_ctx=16, act_fn="gelu", normalization_type="LN",
                                  positional_embedding_type="standard")
    model = _with_random_biases(HookedTransformer(cfg))
    if processed:
        model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    return model


def _hooked_reference(model: HookedTransformer, u: torch.Tensor, tokens: torch.Tensor):
    """Hook ablation everywhere the stream is read: resid_pre of block 0, every resid_mid, and
    pvlens's Ablation at every block output."""
    ab = Ablation(u, layers=list(range(model.cfg.n_layers)))
    hooks = fwd_hooks(model, ab) + [("blocks.0.hook_resid_pre", ab.hook)]
    hooks += [(f"blocks.{i}.hook_resid_mid", ab.hook) for i in range(model.cfg.n_layers)]
    names = [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    store: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor, hook) -> None:
        store[hook.name] = x.detach().clone()

    # the ablation hooks on resid_post run first, so `keep` sees the cleaned stream
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks + [(n, keep) for n in names])
    return logits, [store[n] for n in names]


def _plain(model: HookedTransformer, tokens: torch.Tensor):
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    return logits, [cache[f"blocks.{i}.hook_resid_post"] for i in range(model.cfg.n_layers)]


@pytest.mark.parametrize("make", [
    lambda: _with_random_biases(pvlens.tiny_model()),
    lambda: _gpt2_like(processed=False),
    lambda: _gpt2_like(processed=True),
], ids=["llama-rms", "gpt2-ln", "gpt2-ln-folded-centred"])
def test_weights_equal_hooks(make) -> None:
    model = make()
    u = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(4))
    ablated = ablate_direction_in_weights(model, u)
    ref_logits, ref_resid = _hooked_reference(model, u, tokens)
    logits, resid = _plain(ablated, tokens)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    unit = u / u.norm()
    for got, want in zip(resid, ref_resid, strict=True):
        # fp32 rounding of the two computations grows with the stream's size (|resid| reaches
        # ~160 in the tiny Llama's second block; an avx2-only CPU's kernels left 1.7e-4 there), so
        # the tolerance scales with it (2e-6 × max: 3e-4 there); the unablated model differs by ~100
        torch.testing.assert_close(got, want, atol=2e-6 * float(want.abs().max()), rtol=1e-4)
        assert float((got @ unit).abs().max()) < 1e-4  # the stream never holds u
    base_logits, _ = _plain(model, tokens)
    assert float((base_logits - logits).abs().max()) > 1e-2  # the ablation changed something
    assert not model.hook_dict["blocks.0.hook_resid_post"]._forward_hooks  # no hooks left behind


def test_original_untouched_and_in_place() -> None:
    model = pvlens.tiny_model()
    before = model.W_E.clone()
    u = torch.randn(model.cfg.d_model)
    copy = ablate_direction_in_weights(model, u)
    assert torch.equal(model.W_E, before)
    assert copy is not model
    same = ablate_direction_in_weights(model, u, in_place=True)
    assert same is model and not torch.equal(model.W_E, before)


def test_writing_parameters_names_every_writer() -> None:
    model = pvlens.tiny_model(n_layers=3)
    names = writing_parameters(model)
    assert names[0] == "embed.W_E" and "pos_embed.W_pos" not in names  # rotary: no W_pos
    assert len(names) == 1 + 3 * 4
    assert "pos_embed.W_pos" in writing_parameters(_gpt2_like(False))


def test_bad_directions_refused() -> None:
    model = pvlens.tiny_model()
    with pytest.raises(InputError, match="d_model"):
        ablate_direction_in_weights(model, torch.ones(3))
    with pytest.raises(InputError, match="zero"):
        ablate_direction_in_weights(model, torch.zeros(model.cfg.d_model))


def test_checkpoint_round_trip(tmp_path) -> None:
    base = pvlens.tiny_model()
    u = torch.randn(base.cfg.d_model)
    ablated = ablate_direction_in_weights(base, u)
    save_ablated(ablated, base, tmp_path / "ck", {"trait": "x", "layer": 1})
    loaded = load_ablated(pvlens.tiny_model(), tmp_path / "ck")
    tokens = torch.randint(0, base.cfg.d_vocab, (1, 7))
    torch.testing.assert_close(loaded(tokens), ablated(tokens))
    with pytest.raises(InputError, match="fingerprint"):
        load_ablated(pvlens.tiny_model(seed=5), tmp_path / "ck")
    with pytest.raises(InputError, match="ablation.json"):
        load_ablated(base, tmp_path)
