"""The shipped trait datasets screen as documented on the default model (small and offline).

Uses a trait's shipped vector and its shipped sets (pvlens/data): a handful of samples per
level, base replies generated greedily. docs/screen.md has the full-size numbers (evil: dataset
ΔP normal ≈ 0, level II ≈ +20; hallucinating −13 / +12; AUROC level II vs normal ≈ 0.99).
"""

from __future__ import annotations

import pytest

import pvlens
from pvlens.trainsets.datasets import builtin_dataset, load_messages
from pvlens.trainsets.screen import ScreenConfig, auroc, load_results, screen
from pvlens.vectors import PersonaVectors

pytestmark = pytest.mark.integration
N = 6


def _head(trait: str, level: str, path) -> object:
    rows = builtin_dataset(trait, level).read_text(encoding="utf-8").splitlines()[:N]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("trait", ["evil", "hallucinating"])
def test_shipped_sets_order_by_projection_difference(trait, tmp_path):
    model = pvlens.load_model()
    vecs = PersonaVectors.builtin(trait)
    cfg = ScreenConfig(layer=15, max_new_tokens=32, top_k=0)
    delta = {}
    for level in ("normal", "level_ii"):
        assert len(load_messages(builtin_dataset(trait, level))) >= 50
        data = _head(trait, level, tmp_path / f"{level}.jsonl")
        s = screen(model, data, vecs, tmp_path / level, cfg, cache_dir=tmp_path / "base", progress=False)
        assert s.n == N
        delta[level] = [r["delta"] for r in load_results(tmp_path / level)]
    assert sum(delta["level_ii"]) / N > sum(delta["normal"]) / N + 3.0
    assert auroc(delta["level_ii"], delta["normal"]) >= 0.8
