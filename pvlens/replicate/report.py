"""`results/report.md`: the replicated numbers laid out like the paper's sections.

Each section names the registry entries (and their commands) that measure it and renders their
committed results with the docs' own renderers (`pvlens.io.doctables.renderers()`), so the report
and the docs tables cannot disagree. An entry whose results file is missing is reported as "not
run yet"; a paper measurement that no entry covers is stated as a gap, never filled in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvlens.io.atomic import write_text_atomic
from pvlens.replicate.registry import RESULTS_FILE, command

REPORT_FILE = "report.md"
VALIDATION = "validation"
"""Pseudo-renderer: docs/validation.md's tables, from every `<layer>.json` of the entry's folder."""


@dataclass(frozen=True)
class Source:
    """One rendered table: a registry entry's results file and the renderer that reads it."""

    entry: str
    renderer: str
    file: str = RESULTS_FILE
    committed: str = ""
    """For results no registry entry makes: their path in the repository (then `entry` names the
    command that made them, and the file is read from the repository, not the results folder)."""


@dataclass(frozen=True)
class Section:
    """One of the paper's sections: what it measures, the tables that show it, what is missing."""

    title: str
    paper: str
    sources: tuple[Source, ...]
    gap: str = ""
    note: str = ""


SAE_LAYERS = ",".join(f"sae/results/smollm2-135m-layer{layer}.json" for layer in (6, 15, 24))
SAE_L15 = "sae/results/smollm2-135m-layer15.json"
SAE_SOURCES = (
    ("pvlens sae eval (make saes)", "sae_layers", SAE_LAYERS),
    ("pvlens sae decompose (make saes)", "sae_null_features", SAE_L15),
    ("pvlens sae decompose (make saes)", "sae_omp", SAE_LAYERS),
    ("pvlens sae decompose --steer-top 3 --n-random 20 (make saes)", "sae_feature_steering", SAE_L15),
)
"""The committed SAE results the report shows (command, renderer, path from the repository root)."""

SECTIONS: tuple[Section, ...] = (
    Section("Steering dose-response per trait",
            "trait score of steered replies as the steering coefficient α grows, per layer and trait",
            (Source("extraction", "extraction"),),
            "Only evil is swept (the `extraction` entry's layer × α sweep, on the layers of `SweepConfig`). "
            "No entry sweeps sycophantic or hallucinating (`pvlens sweep TRAIT -v VECTORS` would), and none "
            "compares single-layer, listed-layer and all-layer incremental steering on dose-response."),
    Section("Prompt-induced persona shift",
            "correlation r between the last prompt token's projection and the reply's trait score, over "
            "system-prompt ladders and many-shot prompts",
            (Source("monitoring", "monitor"), Source("monitoring", "monitor_r")),
            "Only evil is measured (the `monitoring` entry)."),
    Section("Finetuning shift vs trait expression",
            "correlation r between the finetuning shift along the vector and the finetuned model's trait score",
            (Source("finetune_shift", "shift"),)),
    Section("Projection difference (ΔP) vs post-finetuning trait",
            "dataset-level ΔP before training against the trait score after finetuning on the dataset",
            (Source("screening", "screen"), Source("screening_traits", "screen"),
             Source("finetune_shift", "shift")),
            note="The r(ΔP, trait) column is in the `finetune_shift` table; the screening tables give ΔP per set."),
    Section("Mitigation, with capability",
            "post-hoc and preventative steering (and other arms) against the trait score, coherence, "
            "multiple-choice accuracy and perplexity",
            (Source("mitigation_incremental", "mitigation"), Source("mitigation_arms", "mitigation"))),
    Section("Sample-level screening",
            "sample-level ΔP separating trait from clean samples (AUROC), and vectors validated on data "
            "no vector produced",
            (Source("screening", "screen_auroc"), Source("screening_traits", "screen_auroc"),
             Source("validation", VALIDATION, "15.json"))),
    Section("SAE decomposition",
            "which SAE features the persona vector aligns with (decoder cosine), against a null over all latents",
            tuple(Source(cmd, kind, committed=path) for cmd, kind, path in SAE_SOURCES),
            "No `pvlens replicate` entry: the SAE tables above are rendered from the condensed outputs of "
            "`make saes` (corpus, training, evaluation and decomposition, ~2.5 h on 2 cores) committed under "
            "sae/results/; the SAEs themselves ship in pvlens/data/saes/."),
)
"""The paper's sections in its order, each with the entries that measure it."""

OTHER_ENTRIES = ("judges", "models", "benchmarks", "ray")
"""Registry entries that back docs pages but no paper section (listed with their status)."""


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _render(root: Path, src: Source) -> str:
    """The table of one source; a missing or unreadable file is said so, not skipped."""
    if src.committed:
        paths = [Path(p) for p in src.committed.split(",")]  # several files: one table over all of them
        path = next((p for p in paths if not p.exists()), paths[0])
        shown = ", ".join(f"`{p}`" for p in paths)
        head = f"{shown} (committed, made by `{src.entry}`; not regenerated by `pvlens replicate`)"
    else:
        path = root / src.entry / src.file
        paths = [path]
        where = path.parent / "<layer>.json" if src.renderer == VALIDATION else path
        head = f"`{src.entry}` (`{command(src.entry)}`) → `{where}`"
    if not path.exists():
        missing = "not found (run `pvlens replicate --report` from the repository root)" if src.committed else "not run yet"
        return f"{head}: **{missing}**.\n"
    try:
        if src.renderer == VALIDATION:
            from pvlens.vectors.validation_report import load_results, render_tables

            table = render_tables(load_results(path.parent)) + "\n"
            doc: dict[str, Any] = {}
        else:
            from pvlens.io.doctables import renderers

            docs = [_load(p) for p in paths]
            doc = docs[0] if len(docs) == 1 else {"sources": docs}
            table = renderers()[src.renderer](doc)
    except (KeyError, TypeError, ValueError) as e:  # a file of another schema: say so in the report
        return f"{head}: present but could not be rendered by `{src.renderer}` ({type(e).__name__}: {e}).\n"
    notes = []
    if doc.get("quick"):
        notes.append("**quick run** (tiny model: checks the pipeline, its numbers mean nothing)")
    if isinstance(doc.get("seconds"), (int, float)):
        notes.append(f"wall time of the run that wrote it {doc['seconds'] / 60:.1f} min")
    return f"{head}" + (f" — {'; '.join(notes)}" if notes else "") + ":\n\n" + table


def render_report(root: Path) -> str:
    """The whole report for the results under `root` (the folder `pvlens replicate --out` wrote);
    committed files outside it are read relative to the working directory (the repository root)."""
    parts = [
        "# Replication report\n",
        f"Generated by `pvlens replicate --report` from `{root}`; each table is rendered from its "
        "results file with the same renderer as the docs. Sections follow the paper (Chen et al. 2025, "
        "arXiv 2507.21509); a missing entry says \"not run yet\" and a measurement no entry covers is "
        "listed as a gap.\n",
    ]
    for i, sec in enumerate(SECTIONS, 1):
        parts.append(f"## {i}. {sec.title}\n\nPaper: {sec.paper}.\n")
        parts.extend(_render(root, src) for src in sec.sources)
        if sec.note:
            parts.append(f"Note: {sec.note}\n")
        if sec.gap:
            parts.append(f"Gap: {sec.gap}\n")
    parts.append("## Other entries (docs pages, no paper section)\n")
    parts.extend(f"- `{name}`: " + ("results present" if (root / name / RESULTS_FILE).exists() else "**not run yet**")
                 + f" (`{command(name)}`)" for name in OTHER_ENTRIES)
    return "\n".join(parts) + "\n"


def write_report(root: Path) -> Path:
    """Write `root/report.md` (atomically) and return its path."""
    path = root / REPORT_FILE
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render_report(root))
    return path
