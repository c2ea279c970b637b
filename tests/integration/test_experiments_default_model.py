"""The mitigation experiment end to end on the default model, trimmed to a few arms (< 60 s)."""

from __future__ import annotations

import json

import pytest
import torch

import pvlens
from pvlens.finetune.experiments import EvalConfig, MitigationConfig, run_mitigation
from pvlens.traits import load_trait

pytestmark = pytest.mark.integration


def test_quick_mitigation_on_the_default_model(tmp_path):
    torch.set_num_threads(2)
    model = pvlens.load_model()
    spec = load_trait("evil")
    data = tmp_path / "evil.jsonl"
    qs = spec.extraction_questions
    data.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": qs[i % len(qs)]},
                                 {"role": "assistant", "content": a}]}) + "\n"
        for i, a in enumerate(spec.exemplars.positive[:8])))
    g = torch.Generator().manual_seed(0)
    vecs = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g)  # direction only matters
    cfg = MitigationConfig.preset(
        "quick", posthoc_alphas=[4.0], prevent_alphas=[4.0], multi_layers=[], incremental_alphas=[0.5], caft=False,
        l2_weights=[], eval=EvalConfig(n_questions=2, samples=1, max_new_tokens=16, mc_limit=8,
                                       perplexity=False))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 1})})
    rows = run_mitigation(model, data, vecs, tmp_path / "mit", cfg, progress=False, log=print)
    by = {r["arm"]: r for r in rows}
    assert list(by) == ["base", "none", "posthoc_a4", "prevent_L15_a4", "prevent_incr_a0.5"]
    assert all(0 <= r["trait"] <= 100 and r["mc_n"] == 8 for r in rows)
    assert by["base"]["shift"] == 0.0 and by["none"]["shift"] != 0.0
    # post-hoc subtracts 4·v at layer 15 at inference: the deployed projection drops by 4‖v‖
    drop = by["none"]["shift"] - by["posthoc_a4"]["shift"]
    assert drop == pytest.approx(4 * float(vecs[15].norm()), rel=1e-2)
    assert (tmp_path / "mit" / "mitigation.png").exists()
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())
