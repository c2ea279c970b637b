"""Tables of docs/sae.md rendered from the committed `sae/results/<sae>.json` files (written by
`sae/results/summarise.py` from `pvlens sae train / eval / decompose` outputs), through
`pvlens.io.doctables`: the held-out evaluation, the FVU–L0 comparison of trained k, the sparse
reconstruction of the vector, its best-aligned features and the single-feature steering check."""

from __future__ import annotations

import math
from typing import Any

from pvlens.io.stats import t_interval
from pvlens.replicate.tables import fmt, md_table


def _int(n: int) -> str:
    """An integer with a space as thousands separator, as the docs write them (2 304)."""
    return f"{n:,}".replace(",", " ")


def sae_eval_table(doc: dict[str, Any]) -> str:
    """Held-out evaluation of one SAE (`pvlens sae eval`)."""
    e, t = doc["eval"], doc["train"]
    m = t["final_train_metrics"]
    rows = [
        ["FVU", f"**{e['fvu']:.3f}**"],
        ["L0", f"**{e['l0']:.1f}**"],
        ["mean cosine(x, x̂)", f"{e['mean_cosine']:.3f}"],
        ["dead latents (never active on the held-out tokens)",
         f"{e['dead']} / {_int(e['d_sae'])} ({100 * e['dead_fraction']:.1f} %)"],
        [f"dense latents (active on > {100 * e['dense_threshold']:g} % of tokens)", str(e["dense"])],
        [f"CE clean / spliced / zero-ablated ({_int(e['ce_tokens'])} tokens)",
         f"{e['ce_clean']:.3f} / {e['ce_sae']:.3f} / {e['ce_zero']:.3f}"],
        ["CE increase, CE-loss score", f"+{e['ce_increase']:.3f} nats, **{e['ce_loss_score']:.3f}**"],
        ["inference top-k FVU (same encoder, no threshold)", _k_curve(e)],
        ["threshold: calibrated / training EMA", f"{t['threshold_calibrated']:.2f} / {t['threshold_ema']:.2f}"],
        [f"training-batch FVU at the last step ({_int(m['tokens'])} tokens)", f"{m['fvu']:.3f}"],
        ["training time (once the activation cache existed)", f"{t['train_seconds'] / 60:.1f} min"],
    ]
    return md_table(["metric", "value"], rows)


def _k_curve(e: dict[str, Any]) -> str:
    return ", ".join(f"{c['fvu']:.3f} (k = {c['k']})" for c in e["k_curve"])


def sae_trained_k_table(doc: dict[str, Any]) -> str:
    """One row per SAE (several sources): trained k, held-out FVU, L0, dead, dense, CE; best in bold."""
    saes = sorted(doc["sources"], key=lambda d: d["train"]["train_config"]["k"])
    best_fvu = min(d["eval"]["fvu"] for d in saes)
    best_ce = max(d["eval"]["ce_loss_score"] for d in saes)
    rows = []
    for d in saes:
        e = d["eval"]
        fvu, ce = f"{e['fvu']:.3f}", f"{e['ce_loss_score']:.3f}"
        rows.append([f"{d['train']['train_config']['k']:g}", f"**{fvu}**" if e["fvu"] == best_fvu else fvu,
                     f"{e['l0']:.1f}", str(e["dead"]), str(e["dense"]),
                     f"{e['ce_clean']:.3f} → {e['ce_sae']:.3f} ({e['ce_zero']:.2f}), {_int(e['ce_tokens'])} tokens",
                     f"**{ce}**" if e["ce_loss_score"] == best_ce else ce, f"{d['train']['train_seconds'] / 60:.1f}",
                     _k_curve(e)])
    return md_table(["trained k", "held-out FVU", "L0", "dead", "dense", "CE clean → spliced (zero)",
                     "CE-loss score", "training min", "inference top-k FVU"], rows)


def sae_reconstruction_table(doc: dict[str, Any]) -> str:
    """Cosine of the vector with its best k-feature reconstruction (OMP) and with the k best features' span."""
    rows = [[str(r["k"]), f"**{r['omp']:.3f}**", f"{r['top_cosine']:.3f}"]
            for r in doc["decomposition_vectors"]["sparse_reconstruction"]]
    return md_table(["k", "OMP", "k best cosines"], rows)


def sae_features_table(doc: dict[str, Any], n: int = 12, width: int = 70) -> str:
    """Rank, feature, decoder cosine, encoder rank, promoted tokens, strongest context (`doc`: a
    summarised SAE result, or one `decomposition.json`)."""
    features = doc["decomposition_vectors"]["features"] if "decomposition_vectors" in doc else doc["features"]
    rows = ["| # | feature | cos | enc. rank | promoted tokens | strongest context (max token in [[ ]]) |",
            "|---|---|---|---|---|---|"]
    for i, fr in enumerate(features[:n]):
        promo = " ".join(repr(t) for t, _ in fr["promoted"][:4]).replace("|", "\\|")
        ctx = ""
        if fr["contexts"]:
            text = fr["contexts"][0]["text"]
            j = text.index("[[")
            ctx = text[max(0, j - width // 2): j + width // 2].replace("|", "\\|")
            ctx = ctx.replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| {i} | {fr['feature']} | {fr['cosine']:.3f} | {fr['rank_by_encoder']} | "
                    f"{promo} | …{ctx}… |")
    return "\n".join(rows) + "\n"


def _condition(s: dict[str, Any], cos: dict[int, float]) -> str:
    if s["kind"] == "baseline":
        return "no steering"
    if s["kind"] == "persona_vector":
        return "the evil vector"
    if s["kind"] == "feature":
        return f"feature {s['feature']} (cos {cos[s['feature']]:.3f})"
    return f"random feature {s['feature']}"


def _mean_se(scores: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / √n)."""
    mean = sum(scores) / len(scores)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in scores) / (len(scores) - 1) / len(scores))


def sae_null_table(doc: dict[str, Any]) -> str:
    """`sae/results/isotropic-null.json`: the best |cosine| a random direction finds among all latents
    of an isotropic dictionary of the SAE's size (the right null for a ranked list), by rank."""
    by_rank = doc["decoder_abs_cosine"]["by_rank"]
    top = doc["decoder_abs_cosine"]["max"]
    rows = [["best latent (rank 1)", f"{top['mean']:.3f}", f"{top['p50']:.3f}", f"{by_rank['95'][0]:.3f}",
             f"{by_rank['99'][0]:.3f}"]]
    rows += [[f"rank {r}", "", "", f"{by_rank['95'][r - 1]:.3f}", f"{by_rank['99'][r - 1]:.3f}"] for r in (5, 10, 20)]
    rows.append(["one latent (mean \\|cos\\|)", f"{doc['one_latent_mean_abs_cosine']:.3f}", "", "", ""])
    return md_table([f"\\|cos\\| with a random direction ({doc['n_directions']} directions, {_int(doc['d_sae'])} "
                     f"latents in d = {doc['d_in']})", "mean", "median", "95th pct", "99th pct"], rows)


def sae_steering_table(doc: dict[str, Any]) -> str:
    """Per steering condition: n replies, judged trait score as mean ± standard error and its 95 %
    t interval over the replies, and mean coherence."""
    dec = doc["decomposition_vectors"]
    cos = {f["feature"]: f["cosine"] for f in dec["features"]}
    base = next(s for s in dec["steering"] if s["kind"] == "baseline")
    base_mean, base_se = _mean_se(base["scores"])
    rows = []
    for s in dec["steering"]:
        mean, lo, hi = t_interval(s["scores"])
        se = _mean_se(s["scores"])[1]
        text = f"{fmt(mean, '.1f')} ± {fmt(se, '.1f')}"
        diff = [] if s is base else [fmt(mean - base_mean, "+.1f"), fmt(math.hypot(se, base_se), ".1f"),
                                     fmt((mean - base_mean) / math.hypot(se, base_se), "+.2f")]
        rows.append([_condition(s, cos), str(s["n"]), f"**{text}**" if s["kind"] == "persona_vector" else text,
                     f"[{fmt(lo, '.1f')}, {fmt(hi, '.1f')}]", fmt(s["coherence"], ".1f"), *(diff or ["–"] * 3)])
    return md_table(["condition", "n", "evil score (mean ± SE)", "95 % interval", "coherence",
                     "Δ vs no steering", "SE of Δ", "Δ / SE"], rows)
