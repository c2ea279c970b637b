"""Ranking SAE features against a persona vector, and how well a few of them rebuild it.

- **decoder cosine** (the paper's): cos(W_dec[i], v). A latent's decoder row is what it *writes*
  into the residual stream when it fires; a high cosine means "this feature, when active,
  pushes the stream along the persona direction".
- **encoding** `v · W_enc[:, i]` (after the SAE's folding, in activation units per unit of v):
  how much the latent's pre-activation rises when v is *added* to the stream — which features
  steering with v would switch on. A persona vector is a difference of means, not an
  activation, so `sae.encode(v)` (bias, threshold) is not meaningful; the linear read-out is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer


def decoder_cosines(sae: SAE, v: Float[Tensor, " d_in"]) -> Float[Tensor, " d_sae"]:
    """cos(W_dec[i], v) for every latent."""
    W = sae.W_dec.detach().float().cpu()
    v = v.detach().float().cpu()
    return (W @ v) / (W.norm(dim=-1).clamp_min(1e-12) * v.norm().clamp_min(1e-12))


def encoder_scores(sae: SAE, v: Float[Tensor, " d_in"]) -> Float[Tensor, " d_sae"]:
    """v · W_enc[:, i]: pre-activation change of each latent when v is added to the stream."""
    return v.detach().float().cpu() @ sae.W_enc.detach().float().cpu()


def direct_logits(model: HookedTransformer, direction: Tensor) -> Float[Tensor, " d_vocab"]:
    """The direct logit effect of a residual direction: through the final norm's weight and
    W_U (without the norm's data-dependent scale)."""
    ln_w = getattr(model.ln_final, "w", None)
    w = ln_w.detach().float().cpu() if isinstance(ln_w, Tensor) else 1.0
    return (direction.detach().float().cpu() * w) @ model.W_U.detach().float().cpu()


def promoted_tokens(model: HookedTransformer, direction: Tensor, n: int = 10) -> list[tuple[str, float]]:
    """Tokens whose logits a direction raises most (final-norm weight and W_U; no norm scale)."""
    top = direct_logits(model, direction).topk(n)
    return [(str(model.tokenizer.decode([int(i)])), float(val)) for val, i in zip(top.values, top.indices, strict=True)]


def suppressed_tokens(model: HookedTransformer, direction: Tensor, n: int = 10) -> list[tuple[str, float]]:
    """Tokens whose logits a direction lowers most (as `promoted_tokens`)."""
    low = (-direct_logits(model, direction)).topk(n)
    return [(str(model.tokenizer.decode([int(i)])), -float(val)) for val, i in zip(low.values, low.indices, strict=True)]


# --- k-sparse reconstruction -----------------------------------------------------------------


def sparse_reconstruction(
    sae: SAE, v: Float[Tensor, " d_in"], ks: Sequence[int] = (1, 5, 20)
) -> list[dict]:
    """Cosine between v and its best k-feature approximation, for each k.

    Two ways of choosing the k decoder rows (coefficients are then least squares, signed):
    `omp` — orthogonal matching pursuit (sklearn), greedy on the residual; `top_cosine` — the k
    rows with the largest |cos| to v. Returns [{k, omp, top_cosine, omp_features}].
    """
    from sklearn.linear_model import orthogonal_mp

    W = sae.W_dec.detach().double().cpu()
    D = (W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)).T.numpy()  # [d_in, d_sae], unit columns
    y = v.detach().double().cpu().numpy()
    cos_all = D.T @ y / np.linalg.norm(y)
    out = []
    for k in ks:
        coef = orthogonal_mp(D, y, n_nonzero_coefs=int(k))
        chosen = np.flatnonzero(coef)
        top = np.argsort(-np.abs(cos_all))[: int(k)]
        sol, *_ = np.linalg.lstsq(D[:, top], y, rcond=None)
        out.append({
            "k": int(k),
            "omp": vector_cosine(D @ coef, y),
            "top_cosine": vector_cosine(D[:, top] @ sol, y),
            "omp_features": [int(i) for i in chosen[np.argsort(-np.abs(coef[chosen]))]],
        })
    return out


def sparse_reconstruction_null(
    sae: SAE, norm: float, ks: Sequence[int] = (1, 5, 20), n: int = 20, seed: int = 0,
) -> list[dict]:
    """The OMP curve of `n` random directions of the same norm: mean and 95th percentile of
    the k-feature cosine (what any direction gets from an overcomplete dictionary)."""
    from pvlens.sae.nulls import random_directions

    R = random_directions(int(sae.cfg.d_in), norm, n, seed)
    curves = np.array([[r["omp"] for r in sparse_reconstruction(sae, R[i], ks)] for i in range(n)])
    return [{"k": int(k), "mean": float(curves[:, j].mean()), "p95": float(np.percentile(curves[:, j], 95))}
            for j, k in enumerate(ks)]


def vector_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two arrays; 0 when either is zero."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0
