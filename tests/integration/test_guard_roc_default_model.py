"""`guard_roc` on the default model, small: every cell's trigger counts on eliciting prompts
equal what `generate(..., guard=...)` reports with that cell's calibrated threshold, and the
AUROC / null fields are well-formed. Whether any setting separates the sets is a measurement
(`pvlens guard roc`, docs/guard.md), not something a short test can assert."""

from __future__ import annotations

import math

import pytest
import torch

import pvlens
from pvlens.core.guard import Guard, GuardRule
from pvlens.monitor.calibrate import shipped_vectors_file
from pvlens.monitor.guard_measure import eliciting_prompts
from pvlens.monitor.guard_roc import GuardRocConfig, guard_roc

pytestmark = pytest.mark.integration


def test_guard_roc_rates_match_guarded_generation():
    torch.set_num_threads(1)
    model = pvlens.load_model()
    cfg = GuardRocConfig(layers=[18], windows=[1, 4], fprs=[0.2, 0.5], n_questions=1, n_benign=2,
                         max_new_tokens=10, n_random=20)
    data = guard_roc(model, cfg)
    vec = pvlens.PersonaVectors.load(shipped_vectors_file("evil"))[18]
    prompts = [m for _, m, _ in eliciting_prompts("evil", 1)]
    for c in data["cells"]:
        assert 0 <= c["auroc"] <= 1 and c["null"]["n"] == 20 and math.isfinite(c["null"]["p95"])
        for f in c["fprs"]:
            guard = Guard([GuardRule(vec, f["threshold"], "evil")], 18, 4.0, window=c["window"])
            res = pvlens.generate(model, prompts, max_new_tokens=10, progress=False, guard=guard)
            hits = sum(e is not None for e in res.triggered)
            assert hits == f["eliciting"]["k"], (c["window"], f["fpr"])
    assert data["n"] == {"eliciting": 3, "benign": 2, "calibration": 54}
