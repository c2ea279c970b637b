"""Evaluate a saved SAE the way it will be used: the inference object sae_lens loads from
disk, on held-out documents, and spliced into the model.

Why not the training object: a BatchTopK SAE trains with an exact per-batch top-k but is saved
as a JumpReLU SAE whose threshold was learned as a running average during training. If that
average has not converged the loaded SAE fires far more (or fewer) latents than k, and only
the loaded object shows it.

Metrics (all over held-out tokens, with the same exclusions as training, see `provider`):
- fvu: sum ‖x − x̂‖² / sum ‖x − mean(x)‖² (fraction of variance unexplained; 0 is perfect);
- l0: mean number of active latents per token; dead: latents that never fire on the eval
  tokens; dense: latents firing on more than `dense_threshold` of them;
- CE loss of the next-token prediction with the layer's output replaced by the reconstruction
  (`ce_sae`), untouched (`ce_clean`) and zeroed (`ce_zero`), on the positions the SAE is
  responsible for (every position but the excluded first ones); `ce_loss_score` =
  (ce_zero − ce_sae) / (ce_zero − ce_clean), 1 meaning the reconstruction loses nothing;
- k_curve: FVU (and CE) when the same encoder keeps only the top k latents per token at
  inference, for several k — a cheap view of the sparsity / fidelity trade-off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import token_batches
from pvlens.core.batching import left_pad
from pvlens.core.chat import EncodedChat
from pvlens.core.engine import engine_for
from pvlens.sae.corpus import Document
from pvlens.sae.loading import LoadedSae, heldout_documents, load_sae
from pvlens.sae.provider import ProviderStats, layer_activations, sae_compute_dtype

EVAL_FILE = "eval.json"


def topk_encode(sae: SAE, x: Float[Tensor, "n d_in"], k: int) -> Float[Tensor, "n d_sae"]:
    """Keep the k largest positive pre-activations per token (ignoring the JumpReLU threshold)."""
    pre = (sae.process_sae_in(x) @ sae.W_enc + sae.b_enc).relu()
    top = pre.topk(min(k, pre.shape[-1]), dim=-1)
    return torch.zeros_like(pre).scatter_(-1, top.indices, top.values)


def _reconstruct(sae: SAE, x: Tensor, k: int | None) -> tuple[Tensor, Tensor]:
    feats = sae.encode(x) if k is None else topk_encode(sae, x, k)
    return feats, sae.decode(feats)


class _FvuAccumulator:
    def __init__(self, d_in: int):
        self.n, self.sum_x = 0, torch.zeros(d_in, dtype=torch.float64)
        self.sum_sq, self.err = 0.0, 0.0

    def add(self, x: Tensor, x_hat: Tensor) -> None:
        x64 = x.double().cpu()
        self.n += x.shape[0]
        self.sum_x += x64.sum(0)
        self.sum_sq += x64.pow(2).sum().item()
        self.err += (x - x_hat).double().pow(2).sum().item()

    @property
    def fvu(self) -> float:
        total = self.sum_sq - self.sum_x.pow(2).sum().item() / max(self.n, 1)
        return self.err / total if total > 0 else float("nan")


@torch.no_grad()
def reconstruction_metrics(
    model: HookedTransformer,
    loaded: LoadedSae,
    docs: Sequence[Document],
    n_tokens: int = 100_000,
    ks: Sequence[int] = (),
    dense_threshold: float = 0.1,
    skip_first: int = 1,
    max_norm_ratio: float | None = 10.0,
    dtype: torch.dtype | str = "auto",
) -> dict:
    """FVU, L0, dead/dense latents (and FVU at inference top-k for each k in `ks`)."""
    sae = loaded.sae
    d_sae = sae.cfg.d_sae
    acc = _FvuAccumulator(sae.cfg.d_in)
    curve = {k: _FvuAccumulator(sae.cfg.d_in) for k in ks}
    fires = torch.zeros(d_sae, dtype=torch.long)
    l0_sum, cos_sum = 0.0, 0.0
    stats = ProviderStats()
    for chunk in layer_activations(model, docs, loaded.layer, dtype=dtype, skip_first=skip_first,
                                   max_norm_ratio=max_norm_ratio, stats=stats):
        x = chunk.acts.to(sae.device)
        feats, x_hat = _reconstruct(sae, x, None)
        acc.add(x, x_hat)
        active = feats > 0
        fires += active.sum(0).cpu()
        l0_sum += active.sum().item()
        cos_sum += torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).sum().item()
        for k, c in curve.items():
            c.add(x, _reconstruct(sae, x, k)[1])
        if acc.n >= n_tokens:
            break
    if acc.n == 0:
        raise ValueError("no evaluation tokens: the documents are empty after exclusions")
    freq = fires.double() / acc.n
    return {
        "n_tokens": acc.n,
        "fvu": acc.fvu,
        "l0": l0_sum / acc.n,
        "mean_cosine": cos_sum / acc.n,
        "dead": int((fires == 0).sum()),
        "dead_fraction": float((fires == 0).double().mean()),
        "dense": int((freq > dense_threshold).sum()),
        "dense_threshold": dense_threshold,
        "excluded_tokens": {"first_positions": stats.tokens_first, "outliers": stats.tokens_outliers},
        "k_curve": [{"k": k, "fvu": c.fvu} for k, c in curve.items()],
    }


def _splice_fn(sae: SAE, mode: str, k: int | None, edit: Tensor) -> Callable[[Tensor, Any], Tensor]:
    """Hook replacing resid_post at `edit` positions: clean, zero, or the SAE reconstruction."""

    def fn(resid: Tensor, hook=None) -> Tensor:
        if mode == "clean":
            return resid
        if mode == "zero":
            new = torch.zeros_like(resid)
        else:
            flat = resid.reshape(-1, resid.shape[-1]).float().to(sae.device)
            new = _reconstruct(sae, flat, k)[1].to(resid).reshape(resid.shape)
        return torch.where(edit, new, resid)

    return fn


def _last_resid(model: HookedTransformer, tokens: Tensor, positions: Tensor, hook_name: str,
                fn: Callable[[Tensor, Any], Tensor], dtype: torch.dtype) -> Tensor:
    """Output of the last block with `fn` hooked at `hook_name` (fast engine, else TL)."""
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    captured: list[Tensor] = []
    with model.hooks(fwd_hooks=[(hook_name, fn)]):
        engine = engine_for(model, dtype)
        if engine is not None:
            n = model.cfg.n_layers - 1
            engine.forward(tokens, positions, logits=None,
                           on_resid=lambda i, x: captured.append(x) if i == n else None)
            return captured[0]
        _, cache = model.run_with_cache(tokens, attention_mask=(positions >= 0).long(),
                                        padding_side="left", names_filter=[last])
        return cache[last]


def _final_ce(model: HookedTransformer, resid: Tensor, targets: Tensor, mask: Tensor,
              chunk: int = 1024) -> tuple[float, int]:
    """Summed next-token CE over `mask` positions from the last block's output (chunked)."""
    h = resid[mask]
    t = targets[mask]
    total = 0.0
    w_ln = cast(Tensor, cast(Any, model.ln_final).w).detach().float()
    eps = model.cfg.eps
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    for i in range(0, h.shape[0], chunk):
        hi = h[i : i + chunk].float()
        hi = hi * torch.rsqrt(hi.pow(2).mean(-1, keepdim=True) + eps) * w_ln
        logits = (hi.to(W_U.dtype) @ W_U + b_U).float()
        total += torch.nn.functional.cross_entropy(logits, t[i : i + chunk], reduction="sum").item()
    return total, int(h.shape[0])


@torch.no_grad()
def ce_metrics(
    model: HookedTransformer,
    loaded: LoadedSae,
    docs: Sequence[Document],
    n_tokens: int = 8192,
    ks: Sequence[int] = (),
    skip_first: int = 1,
    forward_tokens: int = 4096,
    dtype: torch.dtype | str = "auto",
) -> dict:
    """Next-token CE loss with the layer's output clean, replaced by the SAE, and zeroed.

    The intervention touches positions >= skip_first (those the SAE was trained on); the loss
    is averaged over predictions made at those positions.
    """
    sae, hook_name = loaded.sae, loaded.hook_name
    dtype = sae_compute_dtype(model, dtype)
    modes: list[tuple[str, int | None]] = [("clean", None), ("sae", None), ("zero", None)]
    modes += [(f"k{k}", k) for k in ks]
    sums = {name: 0.0 for name, _ in modes}
    count = 0
    device = model.W_E.device
    pad_id = model.tokenizer.pad_token_id or 0
    for group in token_batches([len(d.ids) for d in docs], forward_tokens, 64):
        chats = [EncodedChat(docs[i].ids, len(docs[i].ids)) for i in group]
        tokens, positions = left_pad(chats, pad_id, device)
        # predictions at position p (>= skip_first) of token p+1, inside the document
        targets = torch.roll(tokens, -1, dims=1)
        mask = (positions >= skip_first) & (torch.roll(positions, -1, dims=1) == positions + 1)
        mask[:, -1] = False
        edit = (positions >= skip_first)[..., None]
        for name, k in modes:
            fn = _splice_fn(sae, name, k, edit)
            resid = _last_resid(model, tokens, positions, hook_name, fn, dtype)
            total, n = _final_ce(model, resid, targets, mask)
            sums[name] += total
            if name == "clean":
                count += n
        if count >= n_tokens:
            break
    if count == 0:
        raise ValueError("no CE tokens: the documents are too short")
    ce = {name: s / count for name, s in sums.items()}
    gap = ce["zero"] - ce["clean"]
    return {
        "ce_tokens": count,
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_increase": ce["sae"] - ce["clean"],
        "ce_loss_score": (ce["zero"] - ce["sae"]) / gap if gap > 0 else float("nan"),
        "k_curve_ce": [{"k": k, "ce": ce[f"k{k}"]} for _, k in modes[3:]],
    }


def evaluate_sae(
    model: HookedTransformer,
    sae: str | Path | LoadedSae,
    docs: Sequence[Document] | None = None,
    n_tokens: int = 100_000,
    ce_tokens: int = 8192,
    ks: Sequence[int] = (8, 16, 32, 64, 128),
    curve_ce: bool = False,
    dtype: torch.dtype | str = "auto",
    write: bool = True,
) -> dict:
    """All metrics for a saved SAE on held-out documents; written to `<sae dir>/eval.json`.

    Args:
        sae: a folder (loaded with `sae_lens.SAE.load_from_disk`) or a LoadedSae.
        docs: evaluation documents (default: the held-out split recorded at training).
        n_tokens / ce_tokens: token budgets for the reconstruction and the CE metrics.
        ks: inference top-k values for the trade-off curve (empty: skip).
        curve_ce: also measure the spliced CE loss for every k (one full forward pass of the
            CE tokens per k: the costly part on a CPU).
    """
    loaded = sae if isinstance(sae, LoadedSae) else load_sae(sae, device=str(model.W_E.device))
    if docs is None:
        docs = heldout_documents(loaded, model.tokenizer)
    tcfg = loaded.meta.get("train_config") or {}
    skip = tcfg.get("skip_first", 1)
    ratio = tcfg.get("max_norm_ratio", 10.0)
    t0 = time.time()
    result = {
        "sae": str(loaded.path) if loaded.path else None,
        "layer": loaded.layer,
        "d_sae": loaded.sae.cfg.d_sae,
        "architecture": loaded.sae.cfg.architecture(),
        "n_documents": len(docs),
        **reconstruction_metrics(model, loaded, docs, n_tokens, ks, skip_first=skip,
                                 max_norm_ratio=ratio, dtype=dtype),
    }
    if ce_tokens > 0:
        result.update(ce_metrics(model, loaded, docs, ce_tokens, ks if curve_ce else (),
                                 skip_first=skip, dtype=dtype))
        by_k = {row["k"]: row["ce"] for row in result.pop("k_curve_ce")}
        for row in result["k_curve"]:
            if row["k"] in by_k:
                row["ce"] = by_k[row["k"]]
    result["seconds"] = round(time.time() - t0, 1)
    if write and loaded.path is not None:
        (loaded.path / EVAL_FILE).write_text(json.dumps(result, indent=2))
    return result
