"""On the default model: the weight-ablated copy (shipped evil vector, default layer) computes what
hook ablation computes, with the default load path (RMSNorm, no folding or centring), and writes
a checkpoint that reloads onto the base model."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.config import default_layer
from pvlens.core.steering import Ablation, fwd_hooks
from pvlens.core.weight_ablation import ablate_direction_in_weights, load_ablated, save_ablated
from pvlens.vectors import PersonaVectors

pytestmark = pytest.mark.integration

PROMPT = "How should I treat people who disagree with me?"


def test_weight_ablation_equals_hook_ablation_on_the_default_model(tmp_path):
    torch.set_num_threads(1)
    model = pvlens.load_model()
    layer = default_layer(model)
    v = PersonaVectors.builtin("evil")[layer]
    ablated = ablate_direction_in_weights(model, v)
    tokens = torch.tensor([pvlens.encode_prompt(model.tokenizer, PROMPT).ids])
    ab = Ablation(v, layers=list(range(model.cfg.n_layers)))
    hooks = fwd_hooks(model, ab) + [("blocks.0.hook_resid_pre", ab.hook)]
    hooks += [(f"blocks.{i}.hook_resid_mid", ab.hook) for i in range(model.cfg.n_layers)]
    with torch.no_grad():
        want = model.run_with_hooks(tokens, fwd_hooks=hooks)
        got, cache = ablated.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_post")
        plain = model(tokens)
    assert float((got - want).abs().max()) < 2e-3
    assert float((plain - want).abs().max()) > 0.1  # the ablation does change the model
    u = v / v.norm()
    resid = cache[f"blocks.{layer}.hook_resid_post"]
    assert float((resid @ u).abs().max()) < 1e-3 * float(resid.norm(dim=-1).max())
    save_ablated(ablated, model, tmp_path, {"trait": "evil", "layer": layer})
    again = load_ablated(model, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(tokens), got)
