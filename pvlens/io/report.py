"""A Markdown report with PNG plots for one extracted trait (and its sweep)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from pvlens.io import viz
from pvlens.io.atomic import write_text_atomic
from pvlens.vectors.persona import PersonaVectors
from pvlens.vectors.sweep import SweepResult, examples


def write_report(run_dir: str | Path, sweep_dir: str | Path | None = None) -> Path:
    """`run_dir/report.md` from an extraction folder (and optionally a sweep folder)."""
    run = Path(run_dir)
    vecs = PersonaVectors.load(run / "vectors.safetensors")
    means = load_file(str(run / "means.safetensors"))
    meta = vecs.metadata
    plots = run / "plots"
    norm = vecs.norms()
    ratio = norm / means["response_avg.resid_norm"]
    viz.layer_profile({"‖v‖": norm.tolist()}, plots / "norms.png", f"{vecs.trait}: vector norm", "norm")
    viz.layer_profile({"‖v‖ / mean ‖resid‖": ratio.tolist()}, plots / "norm_ratio.png",
                      f"{vecs.trait}: vector norm relative to the residual", "ratio")
    split = meta.get("split_half_cosine", [])
    viz.layer_profile({"split-half cosine": split}, plots / "split_half.png",
                      f"{vecs.trait}: stability (halves split by question)", "cosine")
    c = meta.get("counts", {})
    lines = [
        f"# Persona vector report: {vecs.trait}",
        "",
        f"*{meta.get('description', '')}*",
        "",
        f"Model `{meta.get('model')}`, judge `{meta.get('judge', {}).get('kind')}`, "
        f"seed {meta.get('seed')}, pvlens {meta.get('pvlens_version')}.",
        "",
        "## Rollouts and filter",
        "",
        "| polarity | total | kept | wrong side of threshold | incoherent | no score |",
        "|---|---|---|---|---|---|",
    ]
    for pol in ("pos", "neg"):
        lines.append(f"| {pol} | {c.get(pol + '_total')} | {c.get(pol + '_kept')} | "
                     f"{c.get(pol + '_wrong_side')} | {c.get(pol + '_incoherent')} | {c.get(pol + '_no_score')} |")
    lines += [
        "", f"Thresholds: {meta.get('thresholds')}.", "",
        "## The vector across layers", "",
        "![norms](plots/norms.png)", "", "![ratio](plots/norm_ratio.png)", "",
        "![split-half](plots/split_half.png)", "",
        "| layer | ‖v‖ | ‖v‖/‖resid‖ | split-half cos |", "|---|---|---|---|",
    ]
    for layer in range(0, vecs.n_layers, 3):
        s = split[layer] if layer < len(split) else float("nan")
        lines.append(f"| {layer} | {norm[layer]:.2f} | {ratio[layer]:.3f} | {s:.3f} |")
    if sweep_dir is not None and (Path(sweep_dir) / "sweep.json").exists():
        lines += _sweep_section(Path(sweep_dir), run)
    path = run / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _sweep_section(sweep_dir: Path, run: Path) -> list[str]:
    result = SweepResult.model_validate_json((sweep_dir / "sweep.json").read_text())
    layers, alphas, trait = result.grid("trait")
    _, _, coh = result.grid("coherence")
    viz.heatmaps({"trait score": trait, "coherence": coh}, layers, alphas, run / "plots" / "sweep.png")
    lines = ["", "## Layer × α sweep", "", "![sweep](plots/sweep.png)", "",
             f"Automatic choice: layer **{result.best_layer}**, α **{result.best_alpha}** "
             "(highest trait score with coherence above the threshold).", "",
             "| layer | Spearman ρ (trait vs α) |", "|---|---|"]
    lines += [f"| {lay} | {rho:.2f} |" for lay, rho in result.spearman.items()]
    if result.best_layer is not None:
        lines += ["", f"### Steered examples at layer {result.best_layer}", ""]
        for alpha, answers in examples(sweep_dir / "sweep.jsonl", result.best_layer, alphas).items():
            for a in answers[:1]:
                text = a["answer"].replace("\n", " ")[:300]
                lines.append(f"- **α={alpha:g}** (trait {a['trait']:.0f}, coherence "
                             f"{a['coherence']:.0f}) — *{a['question']}* → {text}")
    return lines
