"""Set a saved SAE's inference threshold so that it fires a chosen mean number of latents.

A BatchTopK SAE keeps the k x N largest pre-activations of each batch during training and is saved
as a JumpReLU SAE with one threshold, calibrated after training so that mean L0 = k on training
activations (`pvlens.sae.train.calibrate_threshold`). Text the SAE did not see can fire a few
more latents at that threshold (held-out L0 a little above k). `recalibrate` picks the threshold
for another target L0 on the SAE's own *training* documents (never the held-out ones, so the
held-out evaluation stays a test), and records it in `pvlens_sae.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.io.atomic import write_json_atomic
from pvlens.sae.loading import load_sae, training_documents
from pvlens.sae.provider import ActivationProvider
from pvlens.sae.train import META_FILE, l0_cutoff, read_meta


@torch.no_grad()
def threshold_for_l0(sae: SAE, batches: Sequence[Float[Tensor, "n d_in"]], l0: float) -> float:
    """The one threshold at which `sae` keeps, on average over `batches`, `l0` latents per token
    (the (l0 x tokens)-th largest positive pre-activation)."""
    return l0_cutoff([sae.process_sae_in(b.to(sae.device)) @ sae.W_enc + sae.b_enc for b in batches], l0)


def recalibrate(
    model: HookedTransformer, sae_dir: str | Path, l0: float, n_tokens: int = 65536,
) -> dict[str, Any]:
    """Re-set the threshold of the SAE in `sae_dir` for mean L0 = `l0` on `n_tokens` of its
    training activations (same layer, exclusions and dtype as training); rewrites the weights,
    records the calibration in pvlens_sae.json and removes a stale eval.json."""
    sae_dir = Path(sae_dir)
    loaded = load_sae(sae_dir, device=str(model.W_E.device))
    meta = read_meta(sae_dir)
    cfg = meta.get("train_config") or {}
    train_docs = training_documents(loaded, model.tokenizer)
    provider = ActivationProvider(
        model, train_docs, loaded.layer, batch_size=cfg.get("batch_size", 4096), seed=cfg.get("seed", 0),
        dtype=cfg.get("dtype", "auto"), forward_tokens=cfg.get("forward_tokens", 8192),
        skip_first=cfg.get("skip_first", 1), max_norm_ratio=cfg.get("max_norm_ratio", 10.0), cache=False)
    batches = [next(provider) for _ in range(max(1, n_tokens // cfg.get("batch_size", 4096)))]
    threshold = threshold_for_l0(loaded.sae, batches, l0)
    with torch.no_grad():
        loaded.sae.threshold.fill_(threshold)
    loaded.sae.save_model(str(sae_dir))
    record = {"l0": l0, "tokens": sum(b.shape[0] for b in batches), "threshold": threshold,
              "previous_threshold": meta.get("threshold_calibrated"), "documents": "training split"}
    write_json_atomic(sae_dir / META_FILE, {**meta, "threshold_calibrated": threshold, "recalibrated": record})
    (sae_dir / "eval.json").unlink(missing_ok=True)
    return record
