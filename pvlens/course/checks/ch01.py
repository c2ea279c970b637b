"""Checks for chapter 1 (the maths, no model): synthetic data only."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pvlens.course.checks.common import call, close, passed, require


def _data(n: int = 200, d: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two Gaussian clouds that differ along the first axis, with a big nuisance variance on the second."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.ones(d)
    scale[1] = 5.0
    pos = torch.randn(n, d, generator=g) * scale
    neg = torch.randn(n, d, generator=g) * scale
    pos[:, 0] += 1.5
    return pos, neg


def reference_probe(x: Tensor, y: Tensor, steps: int, lr: float) -> tuple[Tensor, Tensor]:
    """Full-batch gradient descent on the mean binary cross-entropy, from w = 0, b = 0."""
    w = torch.zeros(x.shape[1], dtype=torch.float64)
    b = torch.zeros((), dtype=torch.float64)
    xd, yd = x.double(), y.double()
    for _ in range(steps):
        p = torch.sigmoid(xd @ w + b)
        w = w - lr * xd.T @ (p - yd) / len(yd)
        b = b - lr * (p - yd).mean()
    return w.float(), b.float()


def check_diff_of_means(student_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """student_fn(pos [n, d], neg [m, d]) → mean(pos) − mean(neg) [d]."""
    from pvlens.vectors.extract import difference_of_means

    pos, neg = _data()
    want = difference_of_means({"x": pos}, {"x": neg[:150]})["x"]
    close(call(student_fn, pos, neg[:150], name="diff_of_means"), want, "diff_of_means",
          "mean over the samples (dim 0) of each side, then subtract; pos and neg may differ in size")
    passed("diff_of_means")


def check_logistic_probe(student_fn: Callable[..., tuple[Tensor, Tensor]]) -> None:
    """student_fn(x [n, d], y [n] in {0, 1}, steps, lr) → (w [d], b []) by full-batch gradient descent."""
    pos, neg = _data(100)
    x, y = torch.cat([pos, neg]), torch.cat([torch.ones(100), torch.zeros(100)])
    got = call(student_fn, x, y, 50, 0.05, name="logistic_probe")
    require(isinstance(got, tuple) and len(got) == 2, "logistic_probe", "return (w, b)")
    want_w, want_b = reference_probe(x, y, 50, 0.05)
    hint = "start at w = 0, b = 0; gradient of the MEAN cross-entropy: x.T @ (sigmoid(x@w+b) − y) / n"
    close(got[0], want_w, "logistic_probe (w)", hint, rtol=1e-3, atol=1e-4)
    close(torch.as_tensor(got[1]).reshape(()), want_b, "logistic_probe (b)", hint, rtol=1e-3, atol=1e-4)
    passed("logistic_probe")


def check_pca_direction(student_fn: Callable[[Tensor], Tensor]) -> None:
    """student_fn(x [n, d]) → the unit first principal component of the centred data."""
    pos, _ = _data(300)
    x = pos + torch.tensor(3.0)  # an offset the student must remove
    got = call(student_fn, x, name="pca_direction")
    require(isinstance(got, Tensor) and got.shape == (x.shape[1],), "pca_direction", f"return a [{x.shape[1]}] tensor")
    require(abs(float(got.norm()) - 1) < 1e-4, "pca_direction", f"return a unit vector (norm {float(got.norm()):.4f})")
    top = torch.linalg.svd(x - x.mean(0), full_matrices=False).Vh[0]
    cos = abs(float(torch.dot(got.float(), top)))
    require(cos > 0.999, "pca_direction", f"|cos| with the top right-singular vector of the CENTRED data is {cos:.3f}")
    passed("pca_direction")


def check_projection(student_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """student_fn(acts [..., d], v [d]) → acts · v/‖v‖ (scalar projection on the unit direction)."""
    from pvlens.monitor.projection import project

    g = torch.Generator().manual_seed(4)
    acts, v = torch.randn(4, 6, 16, generator=g), torch.randn(16, generator=g) * 7
    close(call(student_fn, acts, v, name="projection"), project(acts, v), "projection",
          "divide by the norm of v: the projection must not change when v is rescaled", rtol=1e-4, atol=1e-5)
    passed("projection")


def check_random_cosine_null(student_fn: Callable[..., Tensor]) -> None:
    """student_fn(v [d], n, seed) → cosines of n isotropic random directions with v."""
    d, n = 256, 4000
    v = torch.randn(d, generator=torch.Generator().manual_seed(5)) + 2.0  # not isotropic itself
    got = call(student_fn, v, n, 0, name="random_cosine_null")
    require(isinstance(got, Tensor) and got.shape == (n,), "random_cosine_null", f"return [{n}] cosines")
    again = call(student_fn, v, n, 0, name="random_cosine_null")
    require(torch.equal(got, again), "random_cosine_null", "the same seed must give the same null (use a torch.Generator)")
    require(bool((got.abs() <= 1 + 1e-5).all()), "random_cosine_null", "cosines lie in [-1, 1]")
    sd = float(got.std())
    require(abs(float(got.mean())) < 4 / math.sqrt(n * d) * 2, "random_cosine_null",
            f"mean {float(got.mean()):.4f}: random directions must be isotropic (torch.randn), not uniform in [0, 1)")
    require(abs(sd * math.sqrt(d) - 1) < 0.1, "random_cosine_null", f"std {sd:.4f}, expected ≈ 1/sqrt(d) = {1 / math.sqrt(d):.4f}")
    passed("random_cosine_null")
