"""The max-over-latents null for an isotropic dictionary the size of the layer-15 SAE.

    python sae/results/isotropic_null.py

Writes sae/results/isotropic-null.json: percentiles of the best |cos| (and of the r-th best)
between a random direction and 2 304 random unit rows in d = 576 — the chance level a ranked
list of decoder cosines must beat (docs/sae.md). A trained SAE's decoder is not isotropic, so
`pvlens sae decompose` measures the null on the SAE itself; this file is the reference level.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from pvlens.io.atomic import write_json_atomic
from pvlens.sae.nulls import ranking_null

D_SAE, D_IN, N, SEED = 2304, 576, 1000, 0


class IsotropicDictionary:
    """Random Gaussian decoder rows (encoder = decoder transpose), the SAE interface nulls use."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(SEED)
        self.W_dec = torch.randn(D_SAE, D_IN, generator=g)
        self.W_enc = self.W_dec.T.clone()
        self.cfg = SimpleNamespace(d_in=D_IN)


if __name__ == "__main__":
    null = ranking_null(IsotropicDictionary(), 1.0, n=N, seed=SEED + 1, ranks=20)
    null.pop("encoder_score")  # meaningless for a random encoder
    null["one_latent_mean_abs_cosine"] = float((2 / torch.pi / D_IN) ** 0.5)
    out = Path(__file__).resolve().parent / "isotropic-null.json"
    write_json_atomic(out, null)
    print(out, null["decoder_abs_cosine"]["max"], "rank-20 p95:", null["decoder_abs_cosine"]["by_rank"]["95"][-1])
