"""What a ranking of SAE features against a vector looks like by chance.

A ranked list is always topped by *some* latent: with 2 304 decoder rows in d = 576, the best
|cos| with a random direction is ≈ 0.17, not the ≈ 0.04 of one random latent. The honest null
for "feature i is aligned with v" is therefore the distribution of the **maximum over all
latents** (and, for rank r, of the r-th largest) for random directions of the same norm as v.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor


def _scores(sae: SAE, R: Tensor) -> tuple[Tensor, Tensor]:
    """|cos(W_dec[i], r)| and r · W_enc[:, i] for each row r of R: [n, d_sae] each."""
    W = sae.W_dec.detach().double().cpu()
    Wn = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    Rn = R / R.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (Rn @ Wn.T).abs(), R @ sae.W_enc.detach().double().cpu()


def random_directions(d: int, norm: float, n: int, seed: int = 0) -> Float[Tensor, "n d"]:
    """`n` isotropic random directions of length `norm` (seeded)."""
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(n, d, generator=g, dtype=torch.float64)
    return R / R.norm(dim=-1, keepdim=True) * norm


def ranking_null(
    sae: SAE, vector_norm: float, n: int = 200, seed: int = 0, ranks: int = 20,
) -> dict[str, Any]:
    """Null distributions of the top of both rankings, from `n` random directions of norm
    `vector_norm`: for decoder |cos| and for encoder score, the percentiles (50/95/99) of the
    maximum over latents and of the r-th largest for r = 1..`ranks`."""
    R = random_directions(int(sae.cfg.d_in), float(vector_norm), n, seed)
    cos, enc = _scores(sae, R)
    out: dict[str, Any] = {"n_directions": n, "seed": seed, "d_sae": int(cos.shape[1]),
                           "d_in": int(sae.cfg.d_in), "vector_norm": float(vector_norm)}
    for name, s in (("decoder_abs_cosine", cos), ("encoder_score", enc)):
        top = s.topk(min(ranks, s.shape[1]), dim=1).values.numpy()  # [n, ranks]
        out[name] = {
            "max": _percentiles(top[:, 0]),
            "by_rank": {q: [float(x) for x in np.percentile(top, float(q), axis=0)] for q in ("95", "99")},
        }
    return out


def _percentiles(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "p50": float(np.percentile(x, 50)),
            "p95": float(np.percentile(x, 95)), "p99": float(np.percentile(x, 99))}


def exceeds(values: list[float], null: dict[str, Any], key: str, q: str = "99") -> list[bool]:
    """Whether each ranked value beats the `q`-th percentile of the max-over-latents null."""
    thr = null[key]["max"][f"p{q}"]
    return [v > thr for v in values]


def null_percentile(value: float, samples: np.ndarray) -> float:
    """Percent of null samples below `value` (0–100)."""
    return float((np.asarray(samples) < value).mean() * 100.0)
