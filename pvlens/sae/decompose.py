"""Decompose a persona vector into SAE features (paper §SAE decomposition).

Two rankings, answering different questions:

- **decoder cosine** (the paper's): cos(W_dec[i], v). A latent's decoder row is what it *writes*
  into the residual stream when it fires; a high cosine means "this feature, when active,
  pushes the stream along the persona direction". This is the ranking that says which
  features the vector is made of.
- **encoding** `v · W_enc[:, i]` (after the SAE's folding, in activation units per unit of v):
  how much the latent's pre-activation rises when v is *added* to the stream. Encoder rows
  are tuned to detect a feature while ignoring overlapping ones, so they differ from decoder
  rows; this ranking says which features steering with v would switch on. A persona vector
  is a difference of means, not an activation, so `sae.encode(v)` (bias, threshold) is not
  meaningful; the linear read-out is.

Per top feature: cosine, the corpus contexts where it fires most (a plain-text table and an
offline circuitsvis `colored_tokens` page), and the output tokens its decoder direction
promotes directly (through the final norm's weight and W_U, ignoring the norm's scale).
`sparse_reconstruction` says how well k features rebuild the vector (orthogonal matching
pursuit). `feature_steering` steers with one feature's decoder direction, scaled to the
persona vector's norm, against random features of the same norm, and judges the replies.
"""

from __future__ import annotations

import html
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.steering import Steering
from pvlens.sae.corpus import Document
from pvlens.sae.loading import LoadedSae
from pvlens.sae.provider import layer_activations

# --- vectors ---------------------------------------------------------------------------------


def load_vector(path: str | Path, layer: int, reduction: str | None = None) -> Float[Tensor, " d_model"]:
    """Row `layer` of a persona-vector file: PersonaVectors safetensors, or any safetensors with
    a `response_avg` (or `reduction`) tensor [n_layers, d_model], or a paper .pt file."""
    path = Path(path)
    try:
        from pvlens.vectors import PersonaVectors
    except ImportError:  # pragma: no cover - vectors ships with pvlens
        PersonaVectors = None
    if PersonaVectors is not None:
        return PersonaVectors.load(path, reduction=reduction)[layer].float()
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    key = reduction or "response_avg"
    if key not in tensors:
        raise KeyError(f"{path} has no {key!r} tensor (has {sorted(tensors)})")
    return tensors[key][layer].float()


# --- rankings --------------------------------------------------------------------------------


def decoder_cosines(sae, v: Float[Tensor, " d_in"]) -> Float[Tensor, " d_sae"]:
    """cos(W_dec[i], v) for every latent."""
    W = sae.W_dec.detach().float().cpu()
    v = v.detach().float().cpu()
    return (W @ v) / (W.norm(dim=-1).clamp_min(1e-12) * v.norm().clamp_min(1e-12))


def encoder_scores(sae, v: Float[Tensor, " d_in"]) -> Float[Tensor, " d_sae"]:
    """v · W_enc[:, i]: pre-activation change of each latent when v is added to the stream."""
    return v.detach().float().cpu() @ sae.W_enc.detach().float().cpu()


def promoted_tokens(model: HookedTransformer, direction: Tensor, n: int = 10) -> list[tuple[str, float]]:
    """Tokens whose logits a direction raises most (final-norm weight and W_U; no norm scale)."""
    w = model.ln_final.w.detach().float().cpu() if hasattr(model.ln_final, "w") else 1.0
    logits = (direction.detach().float().cpu() * w) @ model.W_U.detach().float().cpu()
    top = logits.topk(n)
    return [(model.tokenizer.decode([int(i)]), float(val)) for val, i in zip(top.values, top.indices, strict=True)]


# --- k-sparse reconstruction -----------------------------------------------------------------


def sparse_reconstruction(
    sae, v: Float[Tensor, " d_in"], ks: Sequence[int] = (1, 5, 20)
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
            "omp": _cos(D @ coef, y),
            "top_cosine": _cos(D[:, top] @ sol, y),
            "omp_features": [int(i) for i in chosen[np.argsort(-np.abs(coef[chosen]))]],
        })
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


# --- top-activating contexts -----------------------------------------------------------------


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


def _feature_acts(sae, x: Tensor, features: Tensor) -> Tensor:
    """Inference activations of the selected latents only (JumpReLU threshold applied)."""
    pre = sae.process_sae_in(x) @ sae.W_enc[:, features] + sae.b_enc[features]
    thr = sae.threshold[features] if hasattr(sae, "threshold") else torch.zeros_like(pre[0])
    return pre * (pre > thr)


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
    sae = loaded.sae
    feats = torch.tensor(list(features), dtype=torch.long, device=sae.W_enc.device)
    n_keep = n_contexts * 32  # candidates before de-duplicating documents and repeated text
    vals = torch.full((len(features), 0), -1.0)
    docs_idx = torch.zeros((len(features), 0), dtype=torch.long)
    pos_idx = torch.zeros((len(features), 0), dtype=torch.long)
    seen = 0
    # a seeded random document order: a token budget then samples every source of the corpus,
    # not just the first file
    order = random.Random(seed).sample(range(len(docs)), len(docs))
    for chunk in layer_activations(model, docs, loaded.layer, order=order, skip_first=skip_first):
        a = _feature_acts(sae, chunk.acts.to(sae.device), feats).T.cpu()  # [F, n]
        vals = torch.cat([vals, a], 1)
        docs_idx = torch.cat([docs_idx, chunk.doc[None].expand(len(features), -1)], 1)
        pos_idx = torch.cat([pos_idx, chunk.pos[None].expand(len(features), -1)], 1)
        if vals.shape[1] > n_keep:
            top = vals.topk(n_keep, dim=1).indices
            vals, docs_idx, pos_idx = (t.gather(1, top) for t in (vals, docs_idx, pos_idx))
        seen += chunk.acts.shape[0]
        if n_tokens is not None and seen >= n_tokens:
            break
    picks: dict[int, list[tuple[float, int, int]]] = {}
    for row, f in enumerate(features):
        order = vals[row].argsort(descending=True)
        chosen, used, windows = [], set(), set()
        for j in order.tolist():
            d, p = int(docs_idx[row, j]), int(pos_idx[row, j])
            # one context per document, and no repeated text: rollouts share system prompts
            # and questions, so the same window occurs in many documents
            window = tuple(docs[d].ids[max(0, p - before) : p + after + 1])
            if vals[row, j] <= 0 or d in used or window in windows:
                continue
            used.add(d)
            windows.add(window)
            chosen.append((float(vals[row, j]), d, p))
            if len(chosen) == n_contexts:
                break
        picks[f] = chosen
    return _render_contexts(model, loaded, docs, features, picks, before, after, skip_first)


def _render_contexts(model, loaded, docs, features, picks, before, after, skip_first):
    sae, tok = loaded.sae, model.tokenizer
    need = sorted({d for chosen in picks.values() for _, d, _ in chosen})
    per_doc: dict[int, Tensor] = {}
    feats = torch.tensor(list(features), dtype=torch.long, device=sae.W_enc.device)
    for chunk in layer_activations(model, docs, loaded.layer, order=need, skip_first=0,
                                   max_norm_ratio=None):
        a = _feature_acts(sae, chunk.acts.to(sae.device), feats).cpu()  # [n, F]
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
                tokens=[tok.decode([i]) for i in ids],
                values=[float(x) for x in per_doc[d][lo:hi, row]],
                focus=p - lo,
            ))
        out[f] = contexts
    return out


# --- feature steering ------------------------------------------------------------------------


def _scores(judge, pairs: list[tuple[str, str]]) -> list[float | None]:
    raw = judge.score_many(pairs)
    out = []
    for r in raw:
        value = getattr(r, "score", r)
        out.append(None if value is None else float(value))
    return out


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and not np.isnan(x)]
    return float(np.mean(vals)) if vals else None


def default_judge(trait: str):
    """pvlens's offline judge for `trait` (raises with a hint when judges are unavailable)."""
    try:
        from pvlens.judges import load_judge
    except ImportError as e:
        raise RuntimeError(
            "feature steering needs a judge: pass judge=... (an object with score_many([(q, a)]))"
        ) from e
    return load_judge("offline", trait=trait)


def feature_steering(
    model: HookedTransformer,
    loaded: LoadedSae,
    vector: Float[Tensor, " d_model"],
    features: Sequence[int],
    questions: Sequence[str],
    judge,
    alpha: float = 1.0,
    n_random: int = 2,
    positions: str = "response",
    max_new_tokens: int = 64,
    seed: int = 0,
    samples: int = 1,
    temperature: float = 0.0,
    batch_size: int = 32,
    generate_fn: Callable | None = None,
) -> list[dict]:
    """Mean judge scores of replies steered with each feature vs controls.

    Every condition adds `alpha * d` at the SAE's layer, where d is: nothing (baseline), the
    persona vector, or a feature's unit decoder direction times ‖vector‖ (same norm as the
    persona vector); `n_random` random features not among `features` are the control. Each
    condition answers every question `samples` times (sampling with `temperature`, the same
    seeds in every condition) and reports the mean trait score and, when the judge has
    `coherence_many`, the mean coherence.
    """
    from pvlens.core.generation import generate

    gen = generate_fn or generate
    norm = vector.float().norm()
    W = loaded.sae.W_dec.detach().float().cpu()
    rng = random.Random(seed)
    pool = [i for i in range(W.shape[0]) if i not in set(features)]
    controls = rng.sample(pool, min(n_random, len(pool)))
    conditions: list[tuple[str, int | None, Tensor | None]] = [("baseline", None, None),
                                                               ("persona_vector", None, vector.float())]
    conditions += [("feature", int(f), W[f] / W[f].norm() * norm) for f in features]
    conditions += [("random_feature", int(f), W[f] / W[f].norm() * norm) for f in controls]
    qs = [q for q in questions for _ in range(samples)]
    rows = []
    for kind, feat, direction in conditions:
        steer = None if direction is None else Steering(direction, loaded.layer, alpha, positions)
        kwargs = dict(steer=steer, max_new_tokens=max_new_tokens, temperature=temperature,
                      progress=False)
        if generate_fn is None:
            kwargs.update(seed=seed, batch_size=batch_size)
        res = gen(model, qs, **kwargs)
        pairs = list(zip(qs, res.texts, strict=True))
        scores = _scores(judge, pairs)
        coherence = None
        if hasattr(judge, "coherence_many"):
            coherence = _mean([None if c is None else float(c) for c in judge.coherence_many(pairs)])
        rows.append({"kind": kind, "feature": feat, "alpha": alpha, "trait_score": _mean(scores),
                     "coherence": coherence, "n": len(qs),
                     "scores": scores, "example": res.texts[0][:300] if res.texts else ""})
    return rows


# --- report ----------------------------------------------------------------------------------


@dataclass
class FeatureReport:
    """One feature's entry in a decomposition."""

    feature: int
    cosine: float
    """cos(decoder row, persona vector)."""
    encoder_score: float
    """v · W_enc[:, feature] (pre-activation change when v is added)."""
    rank_by_encoder: int
    """Rank of this feature in the encoder ranking (0 = first)."""
    promoted: list[tuple[str, float]] = field(default_factory=list)
    contexts: list[Context] = field(default_factory=list)


def decompose(
    model: HookedTransformer,
    loaded: LoadedSae,
    vector: Float[Tensor, " d_model"],
    docs: Sequence[Document] | None = None,
    top: int = 20,
    n_contexts: int = 5,
    context_tokens: int | None = 200_000,
    ks: Sequence[int] = (1, 5, 20),
) -> dict:
    """Rankings, per-feature interpretation and k-sparse reconstruction of one vector."""
    if vector.shape[-1] != loaded.sae.cfg.d_in:
        raise ValueError(f"vector has {vector.shape[-1]} dims, the SAE reads {loaded.sae.cfg.d_in}")
    cos = decoder_cosines(loaded.sae, vector)
    enc = encoder_scores(loaded.sae, vector)
    enc_rank = torch.empty_like(enc, dtype=torch.long)
    enc_rank[enc.argsort(descending=True)] = torch.arange(len(enc))
    order = cos.argsort(descending=True)[:top].tolist()
    contexts = top_contexts(model, loaded, docs, order, n_contexts, n_tokens=context_tokens) if docs else {}
    reports = [
        FeatureReport(
            feature=f, cosine=float(cos[f]), encoder_score=float(enc[f]), rank_by_encoder=int(enc_rank[f]),
            promoted=promoted_tokens(model, loaded.sae.W_dec[f]), contexts=contexts.get(f, []),
        )
        for f in order
    ]
    return {
        "layer": loaded.layer,
        "vector_norm": float(vector.norm()),
        "features": reports,
        "top_by_encoder": [
            {"feature": int(i), "encoder_score": float(enc[i]), "cosine": float(cos[i])}
            for i in enc.argsort(descending=True)[:top].tolist()
        ],
        "most_negative_cosine": [
            {"feature": int(i), "cosine": float(cos[i])} for i in cos.argsort()[:5].tolist()
        ],
        "sparse_reconstruction": sparse_reconstruction(loaded.sae, vector, ks),
    }


def text_table(result: dict) -> str:
    """A plain-text report of a decomposition."""
    lines = [f"layer {result['layer']}  |v| = {result['vector_norm']:.3g}", "",
             "k-sparse reconstruction (cosine with v):"]
    for r in result["sparse_reconstruction"]:
        lines.append(f"  k={r['k']:<3d} omp={r['omp']:.3f}  top-cosine={r['top_cosine']:.3f}")
    lines += ["", f"{'rank':>4} {'feature':>7} {'cos':>6} {'enc':>8} {'enc-rank':>8}  promoted tokens"]
    for i, fr in enumerate(result["features"]):
        promo = " ".join(repr(t) for t, _ in fr.promoted[:6])
        lines.append(f"{i:>4} {fr.feature:>7} {fr.cosine:>6.3f} {fr.encoder_score:>8.2f} "
                     f"{fr.rank_by_encoder:>8}  {promo}")
    for fr in result["features"]:
        if not fr.contexts:
            continue
        lines += ["", f"feature {fr.feature} (cos {fr.cosine:.3f}) top contexts:"]
        for c in fr.contexts:
            lines.append(f"  {c.activation:7.2f}  {c.text()}")
    if result.get("steering"):
        lines += ["", "feature steering (mean trait score):"]
        for row in result["steering"]:
            feat = "" if row["feature"] is None else f" {row['feature']}"
            score = "n/a" if row["trait_score"] is None else f"{row['trait_score']:.1f}"
            coh = "" if row.get("coherence") is None else f"  coherence={row['coherence']:.1f}"
            lines.append(f"  {row['kind']}{feat:<8} alpha={row['alpha']:<5} score={score}{coh}")
    return "\n".join(lines) + "\n"


def to_json(result: dict) -> str:
    """The decomposition as JSON (dataclasses flattened)."""
    def conv(o):
        if isinstance(o, FeatureReport | Context):
            return asdict(o)
        raise TypeError(type(o))

    return json.dumps(result, default=conv, indent=2)


def contexts_html(result: dict, title: str = "SAE features of a persona vector") -> str:
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
