"""Checks for chapter 7 (SAE decomposition): TopK activation, decoder cosines, encoder scores,
the max-over-latents null, and orthogonal matching pursuit."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from pvlens.course.checks.inputs import close, passed
from pvlens.sae.ranking import decoder_cosines, encoder_scores
from pvlens.vectors.validate import random_directions


def _weights(seed: int = 0, d: int = 24, m: int = 96) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g), torch.randn(d, m, generator=g), 4 * torch.randn(d, generator=g)


def reference_topk(pre: Tensor, k: int) -> Tensor:
    """ReLU of the k largest pre-activations of each row; every other latent 0."""
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


def check_topk(fn: Callable) -> None:
    """fn(pre [n, d_sae], k) -> activations with at most k non-zeros per row."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(6, 40, generator=g)
    pre[0] = -pre[0].abs()  # a row with no positive value: all zeros after the ReLU
    for k in (1, 5):
        close(fn(pre, k), reference_topk(pre, k), "topk", "Keep the k largest entries per row (topk), "
              "apply ReLU to them, zero everything else (scatter).", atol=1e-6)
    passed("topk")


def check_decoder_cosines(fn: Callable) -> None:
    """fn(W_dec [d_sae, d_in], v [d_in]) -> [d_sae] cos(W_dec[i], v)."""
    W_dec, _, v = _weights()
    want = decoder_cosines(cast(Any, SimpleNamespace(W_dec=W_dec)), v)
    close(fn(W_dec, v), want, "decoder_cosines", "Normalise each decoder *row* and v.", atol=1e-5)
    passed("decoder_cosines")


def check_encoder_scores(fn: Callable) -> None:
    """fn(W_enc [d_in, d_sae], v [d_in]) -> [d_sae] v · W_enc[:, i]."""
    _, W_enc, v = _weights(1)
    want = encoder_scores(cast(Any, SimpleNamespace(W_enc=W_enc)), v)
    close(fn(W_enc, v), want, "encoder_scores", "No normalisation: the change of each latent's "
          "pre-activation when v is added to the stream.", atol=1e-4)
    passed("encoder_scores")


def reference_max_cos_null(W_dec: Tensor, n_dirs: int, seed: int) -> Tensor:
    """max_i |cos(W_dec[i], r)| for each of `n_dirs` random unit directions r."""
    dirs = random_directions(n_dirs, W_dec.shape[-1], seed)
    W = W_dec.double() / W_dec.double().norm(dim=-1, keepdim=True)
    return (dirs @ W.T).abs().max(dim=-1).values


def check_max_cos_null(fn: Callable) -> None:
    """fn(W_dec, n_dirs, seed) -> [n_dirs]: the best |cosine| any latent reaches with a random direction."""
    W_dec, _, _ = _weights(2)
    close(fn(W_dec, 30, 5), reference_max_cos_null(W_dec, 30, 5), "max_cos_null",
          "Draw with random_directions(n_dirs, d_in, seed); for each direction take the MAX over "
          "latents of |cos| — the statistic you compare the top feature with.", atol=1e-6)
    passed("max_cos_null")


def check_omp(fn: Callable) -> None:
    """fn(D [d, m] unit columns, y [d], k) -> coefficients [m] with k non-zeros (sklearn's OMP)."""
    from sklearn.linear_model import orthogonal_mp

    g = np.random.default_rng(0)
    D = g.normal(size=(30, 80))
    D /= np.linalg.norm(D, axis=0)
    for k in (1, 3, 6):
        y = D[:, :k] @ g.uniform(1, 2, size=k) + 0.05 * g.normal(size=30)
        want = torch.as_tensor(orthogonal_mp(D, y, n_nonzero_coefs=k))
        got = torch.as_tensor(np.asarray(fn(D, y, k), dtype=float))
        close(got, want, "omp", "Greedy: pick the column with the largest |D·residual|, refit ALL chosen "
              "columns by least squares, update the residual; repeat k times.", atol=1e-6, rtol=1e-6)
    passed("omp")
