"""Separating signal from chance in SAE decompositions: ranking nulls, token roles, feature
statistics, the feature-steering summary, and the OMP null (tiny SAEs, no model weights)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pvlens.core.chat import encode_conversation
from pvlens.sae.featurestats import FeatureScan, feature_stats, token_roles
from pvlens.sae.nulls import exceeds, random_directions, ranking_null
from pvlens.sae.ranking import sparse_reconstruction_null
from pvlens.sae.steering import steering_summary


class _FakeSae:
    def __init__(self, W_dec: torch.Tensor):
        self.W_dec = W_dec
        self.W_enc = W_dec.T.clone()
        self.cfg = SimpleNamespace(d_in=W_dec.shape[1])


def test_random_directions_have_the_norm_and_are_seeded():
    R = random_directions(32, 5.0, 10, seed=3)
    assert torch.allclose(R.norm(dim=-1), torch.full((10,), 5.0, dtype=R.dtype))
    assert torch.equal(R, random_directions(32, 5.0, 10, seed=3))
    assert not torch.equal(R, random_directions(32, 5.0, 10, seed=4))


def test_max_over_latents_null_is_far_above_one_latent():
    """With 2304 latents in d=576 the best |cos| of a random direction is ~0.17, four times the
    ~0.04 of a single latent (the error issue 12 found in docs/sae.md)."""
    torch.manual_seed(0)
    sae = _FakeSae(torch.randn(2304, 576))
    null = ranking_null(sae, 12.6, n=100, seed=0, ranks=5)
    p50 = null["decoder_abs_cosine"]["max"]["p50"]
    assert 0.14 < p50 < 0.20
    one_latent = math.sqrt(2 / math.pi / 576)  # E|cos| of one random pair
    assert p50 > 3 * one_latent
    by_rank = null["decoder_abs_cosine"]["by_rank"]["95"]
    assert all(a >= b for a, b in zip(by_rank, by_rank[1:], strict=False))  # r-th largest decreases
    assert null["encoder_score"]["max"]["p99"] >= null["encoder_score"]["max"]["p95"] > 0


def test_planted_row_exceeds_the_null_and_random_vector_does_not():
    torch.manual_seed(1)
    W = torch.randn(512, 64)
    sae = _FakeSae(W)
    null = ranking_null(sae, 3.0, n=200, seed=0)
    planted = W[7] / W[7].norm() * 3.0
    cos_planted = float(torch.nn.functional.cosine_similarity(W[7], planted, dim=0))
    rand = torch.randn(64, generator=torch.Generator().manual_seed(99))
    cos_rand = float((torch.nn.functional.cosine_similarity(W, rand[None], dim=1)).abs().max())
    assert exceeds([cos_planted, cos_rand], null, "decoder_abs_cosine") == [True, False]


def test_token_roles_chatml(tiny):
    tok = tiny.tokenizer
    messages = [{"role": "system", "content": "Be evil."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Go away now"}]
    ids = encode_conversation(tok, messages).ids
    roles = token_roles(ids, tok)
    assert len(roles) == len(ids)
    text_by_role = {r: tok.decode([i for i, rr in zip(ids, roles, strict=True) if rr == r])
                    for r in ("system", "user", "assistant")}
    assert "Be evil." in text_by_role["system"] and "Hi there" in text_by_role["user"]
    assert text_by_role["assistant"].strip() == "Go away now"
    plain = tok("just some text", add_special_tokens=False)["input_ids"]
    assert set(token_roles(plain, tok)) == {"text"}


def test_feature_stats_role_fractions_and_histogram(tiny):
    from pvlens.sae.corpus import Document

    tok = tiny.tokenizer
    ids = encode_conversation(tok, [{"role": "user", "content": "Hello friend"},
                                    {"role": "assistant", "content": "Hello back to you"}]).ids
    roles = token_roles(ids, tok)
    resp = [i for i, r in enumerate(roles) if r == "assistant"]
    user = [i for i, r in enumerate(roles) if r == "user"]
    # feature 0 fires on 3 reply tokens and 1 user token; feature 1 never fires
    pos = torch.tensor([resp[0], resp[1], resp[2], user[0]])
    vals = torch.tensor([[4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    scan = FeatureScan([0, 1], vals, torch.zeros_like(vals, dtype=torch.long), pos[None].expand(2, -1).clone(),
                       [[vals[0]], [vals[1][vals[1] > 0]]], n_tokens=40)
    stats = feature_stats(scan, [Document(ids)], tok, n_top=50, bins=4)
    assert stats[0]["response_fraction"] == pytest.approx(0.75)
    assert stats[0]["role_fractions"]["user"] == pytest.approx(0.25)
    assert stats[0]["frequency"] == pytest.approx(4 / 40)
    assert sum(stats[0]["histogram"]["counts"]) == 4
    assert stats[1]["n_top"] == 0 and stats[1]["frequency"] == 0


def test_steering_summary_uses_paired_differences_and_random_null():
    base = [10.0, 20.0, 30.0, 40.0]
    rows = [{"kind": "baseline", "feature": None, "trait_score": 25.0, "scores": base, "n": 4},
            {"kind": "feature", "feature": 3, "trait_score": 30.0, "scores": [b + 5 for b in base], "n": 4}]
    rows += [{"kind": "random_feature", "feature": 100 + i, "trait_score": float(i),
              "scores": [float(i)] * 4, "n": 4} for i in range(20)]
    s = steering_summary(rows)
    feat = next(c for c in s["conditions"] if c["kind"] == "feature")
    # every reply is exactly +5: the paired interval is [5, 5] although the means' own CIs are wide
    assert feat["diff_vs_baseline"]["mean"] == pytest.approx(5.0)
    assert feat["diff_vs_baseline"]["ci95"] == pytest.approx([5.0, 5.0])
    assert feat["ci95"][1] - feat["ci95"][0] > 10
    assert s["n_random"] == 20 and s["random_p95"] == pytest.approx(np.percentile(range(20), 95))
    assert feat["beats_random_p95"] and feat["random_percentile"] == 100.0


def test_omp_null_grows_with_k_and_stays_below_one():
    torch.manual_seed(2)
    sae = _FakeSae(torch.randn(256, 32))
    curve = sparse_reconstruction_null(sae, 1.0, ks=(1, 4, 16), n=5)
    means = [r["mean"] for r in curve]
    assert means[0] < means[1] < means[2] <= 1.0 + 1e-9
    assert all(r["p95"] >= r["mean"] - 1e-12 for r in curve)
