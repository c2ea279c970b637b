"""Chapter 1's checks: a correct answer passes, a plausible wrong one fails."""

from __future__ import annotations

import pytest
import torch

from pvlens.course.checks import ch01


def diff_of_means(pos, neg):
    return pos.mean(0) - neg.mean(0)


def pca_direction(x):
    return torch.linalg.svd(x - x.mean(0), full_matrices=False).Vh[0]


def projection(acts, v):
    return acts @ (v / v.norm())


def random_cosine_null(v, n, seed):
    r = torch.randn(n, v.shape[0], generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.cosine_similarity(r, v[None], dim=-1)


def test_correct_answers_pass(capsys):
    ch01.check_diff_of_means(diff_of_means)
    ch01.check_logistic_probe(ch01.reference_probe)
    ch01.check_pca_direction(pca_direction)
    ch01.check_projection(projection)
    ch01.check_random_cosine_null(random_cosine_null)
    assert capsys.readouterr().out.count("passed") == 5


def _sum_probe(x, y, steps, lr):  # sums instead of averaging the gradient
    w, b = ch01.reference_probe(x, y, steps, lr)
    return w * 3, b


@pytest.mark.parametrize("check, wrong", [
    (ch01.check_diff_of_means, lambda p, n: p.mean(1).mean() - n.mean(1).mean() + 0 * p[0]),
    (ch01.check_diff_of_means, lambda p, n: (p[: len(n)] - n).mean(0) * 1.1),
    (ch01.check_logistic_probe, _sum_probe),
    (ch01.check_pca_direction, lambda x: torch.linalg.svd(x, full_matrices=False).Vh[0]),  # not centred
    (ch01.check_projection, lambda a, v: a @ v),  # raw v, not unit
    (ch01.check_random_cosine_null, lambda v, n, s: torch.nn.functional.cosine_similarity(
        torch.rand(n, v.shape[0], generator=torch.Generator().manual_seed(s)), v[None], dim=-1)),
    (ch01.check_random_cosine_null, lambda v, n, s: random_cosine_null(v, n, s) * 3),
])
def test_wrong_answers_fail(check, wrong):
    with pytest.raises(AssertionError):
        check(wrong)
