"""Where SAE features fire: the top-activating contexts of each feature in a corpus, as text
and as an offline circuitsvis page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.sae.corpus import Document
from pvlens.sae.featurestats import FeatureScan, feature_activations, scan_features
from pvlens.sae.loading import LoadedSae
from pvlens.sae.provider import layer_activations


@dataclass
class Context:
    """Where a feature fires strongly: a window of tokens around the maximum."""

    activation: float
    """The feature's activation at the marked token."""
    source: str
    """Document the context comes from."""
    tokens: list[str] = field(default_factory=list)
    """The window's tokens as strings."""
    values: list[float] = field(default_factory=list)
    """The feature's activation on each window token."""
    focus: int = 0
    """Index of the maximally activating token in `tokens`."""

    def text(self) -> str:
        """One line with the top token in [[double brackets]]."""
        parts = [f"[[{t}]]" if i == self.focus else t for i, t in enumerate(self.tokens)]
        return "".join(parts).replace("\n", "⏎")


@torch.no_grad()
def top_contexts(
    model: HookedTransformer,
    loaded: LoadedSae,
    docs: Sequence[Document],
    features: Sequence[int],
    n_contexts: int = 5,
    before: int = 24,
    after: int = 6,
    n_tokens: int | None = None,
    skip_first: int = 1,
    seed: int = 0,
) -> dict[int, list[Context]]:
    """The `n_contexts` strongest activations of each feature (at most one per document),
    over the first ~`n_tokens` tokens of the documents in a `seed`-shuffled order."""
    scan = scan_features(model, loaded, docs, features, n_keep=n_contexts * 32, n_tokens=n_tokens,
                         skip_first=skip_first, seed=seed)
    return contexts_from_scan(model, loaded, docs, scan, n_contexts, before, after, skip_first)


def contexts_from_scan(
    model: HookedTransformer, loaded: LoadedSae, docs: Sequence[Document], scan: FeatureScan,
    n_contexts: int = 5, before: int = 24, after: int = 6, skip_first: int = 1,
) -> dict[int, list[Context]]:
    """Top contexts of each scanned feature (one per document, no repeated text)."""
    picks = {f: pick_contexts(scan.vals[row], scan.docs_idx[row], scan.pos_idx[row], docs, n_contexts,
                              before, after)
             for row, f in enumerate(scan.features)}
    return render_contexts(model, loaded, docs, scan.features, picks, before, after, skip_first)


Pick = tuple[float, int, int]
"""(activation, document index, position) of one chosen context."""


def pick_contexts(
    vals: Tensor, docs_idx: Tensor, pos_idx: Tensor, docs: Sequence[Document], n_contexts: int,
    before: int, after: int,
) -> list[Pick]:
    """The strongest candidates of one feature, one per document and no repeated text
    (rollouts share system prompts and questions, so one window occurs in many documents)."""
    chosen: list[Pick] = []
    used: set[int] = set()
    windows: set[tuple[int, ...]] = set()
    for j in vals.argsort(descending=True).tolist():
        d, p = int(docs_idx[j]), int(pos_idx[j])
        window = tuple(docs[d].ids[max(0, p - before) : p + after + 1])
        if vals[j] <= 0 or d in used or window in windows:
            continue
        used.add(d)
        windows.add(window)
        chosen.append((float(vals[j]), d, p))
        if len(chosen) == n_contexts:
            break
    return chosen


def render_contexts(
    model: HookedTransformer, loaded: LoadedSae, docs: Sequence[Document], features: Sequence[int],
    picks: dict[int, list[Pick]], before: int, after: int, skip_first: int,
) -> dict[int, list[Context]]:
    """Token windows with the feature's activation on every token, for the chosen contexts."""
    sae, tok = loaded.sae, model.tokenizer
    need = sorted({d for chosen in picks.values() for _, d, _ in chosen})
    per_doc: dict[int, Tensor] = {}
    feats = torch.tensor(list(features), dtype=torch.long, device=sae.W_enc.device)
    for chunk in layer_activations(model, docs, loaded.layer, order=need, skip_first=0,
                                   max_norm_ratio=None):
        a = feature_activations(sae, chunk.acts.to(sae.device), feats).cpu()  # [n, F]
        a[chunk.pos < skip_first] = 0.0  # the SAE never saw the sink positions
        for d in chunk.doc.unique().tolist():
            sel = chunk.doc == d
            per_doc[d] = a[sel][chunk.pos[sel].argsort()]
    out: dict[int, list[Context]] = {}
    for row, f in enumerate(features):
        contexts = []
        for value, d, p in picks[f]:
            lo, hi = max(0, p - before), min(len(docs[d].ids), p + after + 1)
            ids = docs[d].ids[lo:hi]
            contexts.append(Context(
                activation=value, source=docs[d].source,
                tokens=[str(tok.decode([i])) for i in ids],
                values=[float(x) for x in per_doc[d][lo:hi, row]],
                focus=p - lo,
            ))
        out[f] = contexts
    return out


def contexts_html(result: dict[str, Any], title: str = "SAE features of a persona vector") -> str:
    """A self-contained page: per feature, its contexts as circuitsvis `colored_tokens`.

    circuitsvis's JavaScript bundle is inlined once for the whole page (each widget would
    otherwise carry its own 1.3 MB copy), so the page renders offline.
    """
    import circuitsvis
    from circuitsvis.utils.convert_props import convert_props

    bundle = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    js = bundle.read_text(encoding="utf-8").replace("</script>", "")
    body, calls = [f"<h1>{html.escape(title)}</h1>", f"<p>layer {result['layer']}</p>"], []
    for fr in result["features"]:
        promo = ", ".join(html.escape(repr(t)) for t, _ in fr.promoted[:8])
        body.append(f"<h2>feature {fr.feature} — cos {fr.cosine:.3f}, encoder {fr.encoder_score:.2f}</h2>"
                    f"<p>promotes: {promo}</p>")
        vmax = max((max(c.values) for c in fr.contexts if c.values), default=1.0) or 1.0
        for j, c in enumerate(fr.contexts):
            uid = f"f{fr.feature}-c{j}"
            body.append(f"<div class='ctx'><small>{c.activation:.2f} — {html.escape(c.source)}</small>"
                        f"<div id='{uid}'></div></div>")
            props = convert_props({"tokens": c.tokens, "values": c.values, "minValue": 0.0,
                                   "maxValue": vmax})
            calls.append(f'CircuitsVis.render("{uid}", CircuitsVis.ColoredTokens, {props});')
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>"
        + "\n".join(body)
        + "<script type='module'>\n" + js + "\n" + "\n".join(calls) + "\n</script></body></html>"
    )
