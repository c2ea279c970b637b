"""Offline feature dashboards for a decomposition, in the spirit of Neuronpedia's pages.

One self-contained HTML page (no JavaScript, no network): the vector and its null, the
k-sparse curve against its null, feature steering with intervals, and per feature its
top-activating contexts with each token shaded by the activation (the maximum boxed), an
activation histogram (inline SVG), where its strongest activations fall (reply / system /
user / template), promoted and suppressed tokens, and its cosine with each persona vector.
It reads the JSON form of a decomposition (`decompose.to_json`), so `pvlens sae dashboard
decomposition.json` rebuilds a page from a saved run; `show(result)` displays it in a notebook.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:70em;color:#222}
.feat{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:1em 0}
.ctx{font-family:monospace;font-size:.85em;margin:.25em 0;white-space:pre-wrap;line-height:1.6}
.tok{border-radius:2px}.focus{outline:1.5px solid #c00}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
.ok{color:#070;font-weight:bold}.no{color:#999}.tokens{font-family:monospace;font-size:.85em}
.cols{display:flex;gap:2em;flex-wrap:wrap}
"""


def as_plain(result: dict[str, Any]) -> dict[str, Any]:
    """A decomposition (with dataclasses) as plain JSON-able dicts."""
    from pvlens.sae.decompose import to_json

    return json.loads(to_json(result))


def _tokens_html(ctx: dict[str, Any], vmax: float) -> str:
    parts = []
    for i, (tok, val) in enumerate(zip(ctx["tokens"], ctx["values"], strict=True)):
        alpha = max(0.0, min(1.0, val / vmax)) if vmax > 0 else 0.0
        cls = "tok focus" if i == ctx["focus"] else "tok"
        text = escape(tok).replace("\n", "⏎")
        parts.append(f"<span class='{cls}' style='background:rgba(255,120,0,{alpha:.2f})' "
                     f"title='{val:.2f}'>{text}</span>")
    return "".join(parts)


def histogram_svg(hist: dict[str, Any], width: int = 260, height: int = 70) -> str:
    """Bars of an activation histogram ({'counts', 'edges'}) as inline SVG."""
    counts = hist.get("counts") or []
    if not counts or max(counts) == 0:
        return "<svg width='0' height='0'></svg><small>never active in the scanned tokens</small>"
    w = width / len(counts)
    top = max(counts)
    bars = "".join(
        f"<rect x='{i * w:.1f}' y='{height - c / top * height:.1f}' width='{w - 1:.1f}' "
        f"height='{c / top * height:.1f}' fill='#e67e22'><title>{c}</title></rect>"
        for i, c in enumerate(counts))
    lo, hi = hist["edges"][0], hist["edges"][-1]
    return (f"<svg width='{width}' height='{height + 14}'>{bars}"
            f"<text x='0' y='{height + 12}' font-size='10'>{lo:.2g}</text>"
            f"<text x='{width - 30}' y='{height + 12}' font-size='10'>{hi:.3g}</text></svg>")


def _token_list(pairs: list[list[Any]]) -> str:
    return " ".join(f"<code>{escape(repr(t))}</code>&nbsp;<small>{v:+.2f}</small>" for t, v in pairs[:8])


def feature_html(fr: dict[str, Any], rank: int) -> str:
    """One feature's card."""
    st = fr.get("stats") or {}
    mark = "<span class='ok'>&gt; null p99</span>" if fr.get("above_null_p99") else "<span class='no'>within null</span>"
    roles = ", ".join(f"{r} {100 * v:.0f}%" for r, v in (st.get("role_fractions") or {}).items() if v)
    pc = "".join(f"<tr><td style='text-align:left'>{escape(k)}</td><td>{v:+.3f}</td></tr>"
                 for k, v in (fr.get("persona_cosines") or {}).items())
    vmax = max((max(c["values"]) for c in fr.get("contexts", []) if c["values"]), default=1.0) or 1.0
    ctxs = "".join(f"<div class='ctx'><small>{c['activation']:.2f} · {escape(c['source'])}</small><br>"
                   f"{_tokens_html(c, vmax)}</div>" for c in fr.get("contexts", []))
    freq = f"fires on {100 * st['frequency']:.2f}% of tokens · " if "frequency" in st else ""
    return (
        f"<div class='feat' id='f{fr['feature']}'><h3>#{rank} feature {fr['feature']} — cos {fr['cosine']:.3f} "
        f"{mark} · encoder {fr['encoder_score']:.2f} (rank {fr['rank_by_encoder']})</h3>"
        f"<p>{freq}top-{st.get('n_top', 0)} activations: {roles or 'n/a'}</p>"
        f"<div class='cols'><div>{histogram_svg(st.get('histogram') or {})}</div>"
        f"<div><p class='tokens'>promotes: {_token_list(fr.get('promoted', []))}</p>"
        f"<p class='tokens'>suppresses: {_token_list(fr.get('suppressed', []))}</p></div>"
        f"<div><table><tr><th>persona vector</th><th>cos</th></tr>{pc}</table></div></div>{ctxs}</div>"
    )


def summary_html(res: dict[str, Any]) -> str:
    """The page head: null, k-sparse curve vs its null, feature steering."""
    out = [f"<p>layer {res['layer']} · ‖v‖ = {res['vector_norm']:.3g} · "
           f"{len(res['features'])} features ranked by decoder cosine</p>"]
    null = res.get("null")
    if null:
        d = null["decoder_abs_cosine"]["max"]
        out.append(f"<p>Null: {null['n_directions']} random directions of the same norm; best |cos| over "
                   f"{null['d_sae']} latents: median {d['p50']:.3f}, p95 {d['p95']:.3f}, p99 {d['p99']:.3f}. "
                   f"<b>{res.get('n_above_null_p99', 0)}</b> of the top {len(res['features'])} exceed p99.</p>")
    nulls = {r["k"]: r for r in res.get("sparse_reconstruction_null", [])}
    rows = "".join(f"<tr><td>{r['k']}</td><td>{r['omp']:.3f}</td><td>{nulls[r['k']]['mean']:.3f}</td>"
                   f"<td>{nulls[r['k']]['p95']:.3f}</td></tr>" for r in res.get("sparse_reconstruction", [])
                   if r["k"] in nulls)
    if rows:
        out.append("<h2>k-sparse reconstruction (OMP)</h2><table><tr><th>k</th><th>cos(v, fit)</th>"
                   f"<th>random mean</th><th>random p95</th></tr>{rows}</table>")
    out.append(steering_html(res.get("steering_summary")))
    return "".join(out)


def steering_html(summary: dict[str, Any] | None) -> str:
    """Feature steering table with intervals and the random-feature percentile."""
    if not summary:
        return ""
    rows = []
    for c in summary["conditions"]:
        diff = c.get("diff_vs_baseline")
        dtxt = f"{diff['mean']:+.1f} [{diff['ci95'][0]:+.1f}, {diff['ci95'][1]:+.1f}]" if diff else ""
        pct = f"{c['random_percentile']:.0f}" if "random_percentile" in c else ""
        rows.append(f"<tr><td style='text-align:left'>{c['kind']} {c['feature'] if c['feature'] is not None else ''}</td>"
                    f"<td>{c['mean']:.1f} [{c['ci95'][0]:.1f}, {c['ci95'][1]:.1f}]</td><td>{dtxt}</td>"
                    f"<td>{pct}</td><td>{c['n']}</td></tr>")
    p95 = summary.get("random_p95")
    return (f"<h2>Feature steering</h2><p>{summary['n_random']} random features; their p95 = "
            f"{'n/a' if p95 is None else f'{p95:.1f}'}</p><table><tr><th>condition</th><th>score [95% CI]</th>"
            f"<th>vs no steering</th><th>pct of random</th><th>n</th></tr>{''.join(rows)}</table>")


def dashboard_html(result: dict[str, Any], title: str = "SAE features of a persona vector") -> str:
    """The whole page for a decomposition (dataclass or JSON form)."""
    res = as_plain(result)
    cards = "".join(feature_html(fr, i) for i, fr in enumerate(res["features"]))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>{summary_html(res)}"
            f"<h2>Features</h2>{cards}</body></html>")


def write_dashboard(result: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write the page to `path` (atomically)."""
    from pvlens.io.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, dashboard_html(result, title or "SAE features of a persona vector"))
    return path


def show(result: dict[str, Any]):
    """The page as an IPython HTML object (renders inline in Jupyter; no network)."""
    from IPython.display import HTML

    return HTML(dashboard_html(result))
