"""One pass over a corpus for a set of SAE features: the candidates for top-activating contexts,
every positive activation (for histograms and firing rates), and which chat role each of a
feature's strongest activations falls on — so a "format" feature (one that fires on system-prompt
wording or the template) is visible as such next to one that fires inside replies.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.sae.corpus import Document
from pvlens.sae.loading import LoadedSae
from pvlens.sae.provider import layer_activations

ROLES = ("system", "user", "assistant", "template", "text")
"""Token roles: the three chat turns' contents, the template's own tokens, and non-chat text."""

CHATML = ("<|im_start|>", "<|im_end|>")


def token_roles(ids: Sequence[int], tokenizer) -> list[str]:
    """The role of each token of a ChatML document (SmolLM2, Qwen): the turn it belongs to, or
    'template' for `<|im_start|>role⏎` headers and `<|im_end|>`; all 'text' without ChatML."""
    vocab = tokenizer.get_vocab()
    start, end = (vocab.get(t) for t in CHATML)
    if start is None or start not in ids:
        return ["text"] * len(ids)
    roles, current, header = [], "text", None
    for i in ids:
        if i == start:
            roles.append("template")
            header = ""
            continue
        if header is not None:  # reading "role\n"
            header += tokenizer.decode([i])
            roles.append("template")
            if "\n" in header:
                name = header.strip()
                current = name if name in ("system", "user", "assistant") else "text"
                header = None
            continue
        if i == end:
            current = "template"  # the separator between turns belongs to no turn
        roles.append(current)
    return roles


@torch.no_grad()
def feature_activations(sae: SAE, x: Tensor, features: Tensor) -> Tensor:
    """Inference activations of the selected latents only (JumpReLU threshold applied; no autograd
    graph: the SAE's weights are parameters)."""
    pre = sae.process_sae_in(x) @ sae.W_enc[:, features] + sae.b_enc[features]
    thr = sae.threshold[features] if hasattr(sae, "threshold") else torch.zeros_like(pre[0])
    return pre * (pre > thr)


@dataclass
class FeatureScan:
    """What one pass over the corpus saw for the features (rows in the order given)."""

    features: list[int]
    vals: Tensor
    """[F, n_keep] strongest activations of each feature (descending not guaranteed)."""
    docs_idx: Tensor
    """[F, n_keep] document index of each candidate."""
    pos_idx: Tensor
    """[F, n_keep] position of each candidate."""
    positives: list[list[Tensor]] = field(default_factory=list)
    """Per feature, chunks of its positive activations."""
    n_tokens: int = 0
    """Tokens scanned."""


@torch.no_grad()
def scan_features(
    model: HookedTransformer, loaded: LoadedSae, docs: Sequence[Document], features: Sequence[int],
    n_keep: int = 160, n_tokens: int | None = None, skip_first: int = 1, seed: int = 0,
) -> FeatureScan:
    """Activations of `features` over ~`n_tokens` tokens of `docs` in a seeded random order
    (so a token budget samples every source, not just the first file)."""
    sae = loaded.sae
    F = len(features)
    feats = torch.tensor(list(features), dtype=torch.long, device=sae.W_enc.device)
    scan = FeatureScan(list(features), torch.full((F, 0), -1.0), torch.zeros((F, 0), dtype=torch.long),
                       torch.zeros((F, 0), dtype=torch.long), [[] for _ in range(F)])
    order = random.Random(seed).sample(range(len(docs)), len(docs))
    for chunk in layer_activations(model, docs, loaded.layer, order=order, skip_first=skip_first):
        a = feature_activations(sae, chunk.acts.to(sae.device), feats).T.cpu().float()  # [F, n]
        for row in range(F):
            scan.positives[row].append(a[row][a[row] > 0])
        scan.vals = torch.cat([scan.vals, a], 1)
        scan.docs_idx = torch.cat([scan.docs_idx, chunk.doc[None].expand(F, -1)], 1)
        scan.pos_idx = torch.cat([scan.pos_idx, chunk.pos[None].expand(F, -1)], 1)
        if scan.vals.shape[1] > n_keep:
            top = scan.vals.topk(n_keep, dim=1).indices
            scan.vals, scan.docs_idx, scan.pos_idx = (t.gather(1, top) for t in
                                                      (scan.vals, scan.docs_idx, scan.pos_idx))
        scan.n_tokens += chunk.acts.shape[0]
        if n_tokens is not None and scan.n_tokens >= n_tokens:
            break
    return scan


def feature_stats(scan: FeatureScan, docs: Sequence[Document], tokenizer, n_top: int = 50,
                  bins: int = 20) -> dict[int, dict[str, Any]]:
    """Per feature: firing rate, activation histogram, and the role fractions of its `n_top`
    strongest activations (`response_fraction` = share on assistant-turn tokens)."""
    roles_cache: dict[int, list[str]] = {}
    out: dict[int, dict[str, Any]] = {}
    for row, f in enumerate(scan.features):
        pos = torch.cat(scan.positives[row]) if scan.positives[row] else torch.zeros(0)
        order = scan.vals[row].argsort(descending=True)[:n_top]
        counts = dict.fromkeys(ROLES, 0)
        n = 0
        for j in order.tolist():
            if scan.vals[row, j] <= 0:
                break
            d = int(scan.docs_idx[row, j])
            if d not in roles_cache:
                roles_cache[d] = token_roles(docs[d].ids, tokenizer)
            counts[roles_cache[d][int(scan.pos_idx[row, j])]] += 1
            n += 1
        hist, edges = np.histogram(pos.numpy(), bins=bins) if len(pos) else (np.zeros(bins), np.zeros(bins + 1))
        out[f] = {
            "frequency": len(pos) / max(scan.n_tokens, 1), "n_top": n,
            "role_fractions": {r: c / n if n else 0.0 for r, c in counts.items()},
            "response_fraction": counts["assistant"] / n if n else 0.0,
            "histogram": {"counts": [int(c) for c in hist], "edges": [float(e) for e in edges]},
        }
    return out
