"""Chapter 7 checks: each reference answer passes its check, a plausible wrong answer fails it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvlens.course.checks import ch07
from pvlens.course.checks.ch07 import reference_max_cos_null, reference_topk
from pvlens.vectors.validate import random_directions


def test_ch07_checks():
    ch07.check_topk(reference_topk)
    with pytest.raises(AssertionError):  # no ReLU
        ch07.check_topk(lambda pre, k: torch.zeros_like(pre).scatter(-1, pre.topk(k).indices, pre.topk(k).values))
    ch07.check_decoder_cosines(lambda W, v: (W @ v) / (W.norm(dim=-1) * v.norm()))
    with pytest.raises(AssertionError):  # normalised the wrong axis
        ch07.check_decoder_cosines(lambda W, v: (W @ v) / (W.norm(dim=0).mean() * v.norm()))
    ch07.check_encoder_scores(lambda W, v: v @ W)
    with pytest.raises(AssertionError):
        ch07.check_encoder_scores(lambda W, v: (v / v.norm()) @ W)
    ch07.check_max_cos_null(reference_max_cos_null)
    with pytest.raises(AssertionError):  # one latent's cosine: the wrong null
        ch07.check_max_cos_null(lambda W, n, s: (random_directions(n, W.shape[-1], s)
                                                 @ (W[0] / W[0].norm()).double()).abs())


def test_ch07_omp():
    from sklearn.linear_model import orthogonal_mp
    ch07.check_omp(lambda D, y, k: orthogonal_mp(D, y, n_nonzero_coefs=k))

    def top_cosines(D, y, k):  # picks the k best columns at once, no greedy residual
        idx = np.argsort(-np.abs(D.T @ y))[:k]
        coef = np.zeros(D.shape[1])
        coef[idx] = np.linalg.lstsq(D[:, idx], y, rcond=None)[0]
        return coef

    def no_refit(D, y, k):  # matching pursuit without the least-squares refit
        r, coef = y.copy(), np.zeros(D.shape[1])
        for _ in range(k):
            i = int(np.argmax(np.abs(D.T @ r)))
            coef[i] += D[:, i] @ r
            r = r - D[:, i] * (D[:, i] @ r)
        return coef
    with pytest.raises(AssertionError):
        ch07.check_omp(no_refit)
    try:  # top cosines may coincide with OMP on easy inputs; only require it not to crash the check
        ch07.check_omp(top_cosines)
    except AssertionError:
        pass
