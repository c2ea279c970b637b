"""Markdown tables for docs/directions.md from results/directions and results/off_target JSON
(rendered through pvlens.io.doctables: one renderer, `directions`, that knows both files)."""

from __future__ import annotations

from typing import Any


def _ci(mean: float, ci: list[float], signed: bool = False, places: int = 1) -> str:
    """'m [lo, hi]', bold when a signed change's interval excludes 0."""
    f = f"+.{places}f" if signed else f".{places}f"
    text = f"{mean:{f}} [{ci[0]:{f}}, {ci[1]:{f}}]"
    return f"**{text}**" if signed and (ci[0] > 0 or ci[1] < 0) else text


def _auroc(cell: dict[str, Any]) -> str:
    lo, hi = cell["ci95"]
    return f"{cell['auroc']:.3f} [{lo:.3f}, {hi:.3f}] (null pct {cell['null_percentile']:.0f})"


def methods_table(data: dict[str, Any]) -> str:
    """One row per method: cosine with the mean, AUROCs, and the judged change at each α."""
    methods, steering = data["methods"], data["steering"]
    alphas = [a for a in steering[methods[0]] if float(a) != 0]
    head = ["method", "cos with mean", "screening AUROC", "monitoring AUROC (all tokens)"]
    head += [f"Δ trait α={a}" for a in alphas] + [f"coherence α={alphas[-1]}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cos = 1.0 if m == "mean" else data["cosines"].get(f"mean~{m}", float("nan"))
        row = [m, f"{cos:.2f}", _auroc(data["auroc"]["screening"]["cells"][m]),
               _auroc(data["auroc"]["monitoring"]["cells"][m])]
        row += [_ci(steering[m][a]["trait"]["delta"], steering[m][a]["trait"]["delta_ci95"], True) for a in alphas]
        top = steering[m][alphas[-1]]["coherence"]
        row.append(_ci(top["mean"], top["ci95"]))
        lines.append("| " + " | ".join(row) + " |")
    base = steering[methods[0]]["0"]
    scr, mon = data["auroc"]["screening"], data["auroc"]["monitoring"]
    lines.append("")
    lines.append(
        f"Trait `{data['trait']}`, layer {data['layer']}, {data['n_pairs']} kept rollout pairs. AUROC: "
        f"{scr['n']} hand-written questions (trait vs clean answer), 95 % question-bootstrap interval, "
        f"percentile among {scr['null']['n']} random directions (null 95th pct: screening "
        f"{scr['null']['p95']:.3f}, all tokens {mon['null']['p95']:.3f}). Steering: {base['n']} answers per α "
        f"(unsteered trait {_ci(base['trait']['mean'], base['trait']['ci95'])}, coherence "
        f"{_ci(base['coherence']['mean'], base['coherence']['ci95'])}); Δ = paired change from α = 0, "
        "bootstrap 95 % interval, bold when it excludes 0."
        + (f" Mean difference vs the shipped `{data['trait']}` vector at this layer: cosine {data['shipped_cosine']:.3f}."
           if data.get("shipped_cosine") is not None else "")
    )
    return "\n".join(lines) + "\n"


def off_target_table(data: dict[str, Any]) -> str:
    """Rows = steered trait, columns = every judged trait's change, coherence, MC accuracy, perplexity."""
    judged = data["judged_traits"]
    head = ["steered", *judged, "coherence", "MC accuracy", "perplexity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in data["rows"].items():
        cells = row["judged"]
        if name == "none":
            vals = [_ci(cells[t]["mean"], cells[t]["ci95"]) for t in [*judged, "coherence"]]
        else:
            vals = [_ci(cells[t]["delta"], cells[t]["delta_ci95"], True) for t in [*judged, "coherence"]]
        cap = row["capability"]
        lo, hi = cap["mc_ci95"]
        vals += [f"{cap['mc_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]", f"{cap['perplexity']:.2f}"]
        lines.append("| " + " | ".join([name if name != "none" else "none (scores)", *vals]) + " |")
    cap = data["rows"]["none"]["capability"]
    lines.append("")
    lines.append(
        f"Steering at layer {data['layer']}, α = {data['alpha']:g} (raw shipped vectors, response positions); "
        f"{data['n_answers']} answers per row to the same pooled questions and seeds. Row 'none': mean judge "
        "score [95 % bootstrap]; other rows: paired change from 'none' (bold when the interval excludes 0). "
        f"MC: {cap['mc_n']} built-in questions (chance {cap['mc_chance']:.2f}), bootstrap interval; "
        "perplexity of the built-in held-out prose (one text, no interval)."
    )
    return "\n".join(lines) + "\n"


def _paired(cell: dict[str, Any] | None, places: int) -> str:
    """A paired difference '+d [lo, hi]' (bold when the interval excludes 0); '—' if not measured."""
    return "—" if cell is None else _ci(cell["delta"], cell["ci95"], True, places)


def methods_summary_table(data: dict[str, Any]) -> str:
    """Rows = traits × measures (one comparison file per trait), columns = each method's value and
    the paired difference of PCA and probe from the mean difference."""
    runs = data.get("sources", [data])
    methods = runs[0]["methods"]
    others = [m for m in methods if m != "mean"]
    head = ["trait", "pairs", "measure", *methods, *[f"{m} − mean" for m in others]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        top = max(run["steering"][methods[0]], key=float)
        rows = []
        for name, key in (("screening AUROC", "screening"), ("monitoring AUROC", "monitoring")):
            res = run["auroc"][key]
            cells = [f"{res['cells'][m]['auroc']:.3f}" for m in methods]
            rows.append((name, cells, [_paired(res.get("vs_mean", {}).get(m), 3) for m in others]))
        steer = {m: run["steering"][m][top]["trait"] for m in methods}
        rows.append((f"Δ trait α={top} (n={run['steering'][methods[0]][top]['n']})",
                     [_ci(steer[m]["delta"], steer[m]["delta_ci95"], True) for m in methods],
                     [_paired(steer[m].get("vs_mean"), 1) for m in others]))
        for i, (name, cells, diffs) in enumerate(rows):
            lead = [f"`{run['trait']}`", str(run["n_pairs"])] if i == 0 else ["", ""]
            lines.append("| " + " | ".join([*lead, name, *cells, *diffs]) + " |")
    lines.append("")
    lines.append(
        "Each trait's three directions come from the same kept rollout pairs. AUROC: projection of the "
        "trait's hand-written trait vs clean answers (screening: answer tokens; monitoring: all tokens). "
        "Δ trait: paired change of the offline judge's trait score from α = 0. The last columns are paired "
        "differences from the mean difference (the same questions resampled for both AUROCs, the same "
        "question and seed for both steered answers), 95 % bootstrap intervals, bold when they exclude 0."
    )
    return "\n".join(lines) + "\n"


def directions_table(data: dict[str, Any]) -> str:
    """The off-target matrix for an off-target results file, else the method comparison."""
    return off_target_table(data) if "rows" in data else methods_table(data)
