"""Chapter 3's checks: a correct answer passes, a plausible wrong one fails."""

from __future__ import annotations

import pytest
import torch

from pvlens.course.checks import ch03


def _passes(r, t, c):
    if r.trait_score is None or r.coherence is None or r.coherence < c:
        return False
    return r.trait_score >= t if r.polarity == "pos" else r.trait_score < t


def keep_mask(rollouts, t, c, pairing):
    ok = {r.key: _passes(r, t, c) for r in rollouts}
    if pairing == "sample":
        return [ok[r.key] for r in rollouts]
    by_pair = {}
    for r in rollouts:
        by_pair.setdefault(r.pair_key, []).append(r)
    return [len(by_pair[r.pair_key]) == 2 and all(ok[x.key] for x in by_pair[r.pair_key]) for r in rollouts]


def split_half_cosine(pos, neg, pg, ng, first):
    pa, na = torch.tensor([g in first for g in pg]), torch.tensor([g in first for g in ng])
    v1 = pos[pa].mean(0) - neg[na].mean(0)
    v2 = pos[~pa].mean(0) - neg[~na].mean(0)
    return torch.nn.functional.cosine_similarity(v1, v2, dim=-1)


def test_correct_answers_pass(capsys):
    ch03.check_keep_mask(keep_mask)
    ch03.check_per_layer_diff_of_means(lambda p, n: p.mean(0) - n.mean(0))
    ch03.check_split_half_cosine(split_half_cosine)
    assert capsys.readouterr().out.count("passed") == 3


@pytest.mark.parametrize("check, wrong", [
    (ch03.check_keep_mask, lambda rs, t, c, p: keep_mask(rs, t, c, "sample")),  # ignores pairing
    (ch03.check_keep_mask, lambda rs, t, c, p: [r.trait_score is not None and r.coherence is not None
                                               and r.coherence >= c and r.trait_score >= t for r in rs]),  # one rule for both sides
    (ch03.check_per_layer_diff_of_means, lambda p, n: p.mean((0, 1)) - n.mean((0, 1))),
    (ch03.check_split_half_cosine, lambda p, n, pg, ng, f: split_half_cosine(p, n, list(range(len(pg))), ng, f)),
])
def test_wrong_answers_fail(check, wrong):
    with pytest.raises(AssertionError):
        check(wrong)
