"""Other ways to turn the same pos/neg activations into a direction, per layer.

- `mean` (the paper, pvlens's default): mean(pos) − mean(neg).
- `pca` (repeng's `pca_diff`): the first principal component of the paired differences
  pos_i − neg_i (centred, as sklearn's PCA does in repeng), sign-aligned with the mean
  difference.
- `probe`: an L2-regularised logistic regression (sklearn, C=1, features standardised per
  layer) of pos vs neg; the direction is its weight vector mapped back to activation space
  (coef / feature scale), unit-normalised.

`pca` and `probe` give a direction but no natural length, so both are rescaled per layer to the
norm of the mean difference: the steering strength α then means the same push size for all
three methods, and a comparison at equal α compares directions, not lengths.

They are stored next to the mean difference in one vectors file, as extra "reductions"
named `{reduction}:{method}` (e.g. `response_avg:pca`); `PersonaVectors.use("response_avg:pca")`
or `--reduction response_avg:pca` selects one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from pvlens.errors import InputError

METHODS = ("mean", "pca", "probe")
"""Direction-finding methods; `mean` is the paper's and the default."""
PROBE_C = 1.0
"""Inverse L2 strength of the logistic probe (sklearn's default)."""


def method_key(reduction: str, method: str) -> str:
    """The tensor name of `method`'s vectors for `reduction` (`mean` keeps the bare name)."""
    check_methods([method])
    return reduction if method == "mean" else f"{reduction}:{method}"


def check_methods(methods: Sequence[str]) -> list[str]:
    """`methods` as a list, refusing unknown names (the message lists the known ones)."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InputError(f"unknown direction method(s) {bad}; choose from {list(METHODS)}")
    return list(methods)


def mean_difference(pos: Float[Tensor, "n_pos n_layers d"], neg: Float[Tensor, "n_neg n_layers d"]
                    ) -> Float[Tensor, "n_layers d"]:
    """mean(pos) − mean(neg) per layer, accumulated in float64."""
    return (pos.double().mean(0) - neg.double().mean(0)).float()


def _align(direction: Tensor, reference: Tensor) -> Tensor:
    """`direction` scaled to `reference`'s norm, pointing the same way (positive dot product)."""
    d = direction.double()
    d = d / d.norm().clamp_min(1e-12)
    sign = -1.0 if float(d @ reference.double()) < 0 else 1.0
    return (sign * d * reference.double().norm()).float()


def pca_of_differences(pos: Float[Tensor, "n_pairs n_layers d"], neg: Float[Tensor, "n_pairs n_layers d"]
                       ) -> Float[Tensor, "n_layers d"]:
    """repeng's method: first principal component of the centred paired differences pos_i − neg_i."""
    if pos.shape != neg.shape or pos.shape[0] < 2:
        raise InputError(f"PCA of differences needs ≥ 2 aligned pairs, got pos {tuple(pos.shape)}, "
                         f"neg {tuple(neg.shape)}")
    diff = pos.double() - neg.double()
    ref = diff.mean(0)
    out = []
    for layer in range(diff.shape[1]):
        x = diff[:, layer] - diff[:, layer].mean(0)
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        out.append(_align(vh[0], ref[layer]))
    return torch.stack(out)


def logistic_probe(pos: Float[Tensor, "n_pos n_layers d"], neg: Float[Tensor, "n_neg n_layers d"],
                   c: float = PROBE_C, seed: int = 0) -> Float[Tensor, "n_layers d"]:
    """Per layer, a logistic regression pos (1) vs neg (0) on standardised features; its
    weights divided by the feature scales give the direction in activation space."""
    from sklearn.linear_model import LogisticRegression

    ref = mean_difference(pos, neg)
    y = np.r_[np.ones(pos.shape[0]), np.zeros(neg.shape[0])]
    out = []
    for layer in range(pos.shape[1]):
        x = torch.cat([pos[:, layer], neg[:, layer]]).double().numpy()
        scale = x.std(0) + 1e-8
        z = (x - x.mean(0)) / scale
        clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(z, y)
        out.append(_align(torch.from_numpy(clf.coef_[0] / scale), ref[layer]))
    return torch.stack(out)


Pairs = tuple[list[int], list[int]]
"""(pos rows, neg rows) that form the pairs PCA of differences uses (pos[i] with neg[j])."""


def directions(
    pos: Float[Tensor, "n_pos n_layers d"], neg: Float[Tensor, "n_neg n_layers d"],
    methods: Sequence[str] = METHODS, seed: int = 0, pairs: Pairs | None = None,
) -> dict[str, Float[Tensor, "n_layers d"]]:
    """{method: [n_layers, d]}; mean and probe use every row, pca the `pairs` (default: row i
    of pos with row i of neg)."""
    ip, ineg = pairs if pairs is not None else (list(range(pos.shape[0])), list(range(neg.shape[0])))
    build = {
        "mean": lambda: mean_difference(pos, neg),
        "pca": lambda: pca_of_differences(pos[ip], neg[ineg]),
        "probe": lambda: logistic_probe(pos, neg, seed=seed),
    }
    return {m: build[m]() for m in check_methods(methods)}


def method_tensors(
    pos: dict[str, Tensor], neg: dict[str, Tensor], methods: Sequence[str], seed: int = 0,
    pairs: Pairs | None = None,
) -> dict[str, Tensor]:
    """Every reduction × method as named tensors for a PersonaVectors file (see `method_key`)."""
    return {method_key(red, m): t for red in pos
            for m, t in directions(pos[red], neg[red], methods, seed, pairs).items()}
