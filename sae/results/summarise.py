"""Condense a trained SAE's eval / decomposition outputs into small committed files.

    python sae/results/summarise.py sae/trained/smollm2-135m-layer15 [more SAE folders]
    python sae/results/summarise.py sae/trained/smollm2-135m-layer6 sae/results/smollm2-135m-layer15.json

A `sae/results/<name>.json` given instead of a folder is an SAE that was not retrained: it is
kept as it is and only joins the plots (its training curve only if its record holds the log).

Writes `sae/results/<name>.json` (training record, held-out eval, decomposition without the
bulky context values), `sae/results/<name>-decomposition.txt`, its dashboard page
`sae/results/<name>-dashboard.html`, and the plots
`docs/img/sae_fvu_l0.png` (held-out FVU vs L0 for every SAE given, plus each one's inference
top-k curve) and `docs/img/sae_train_curve.png`. The SAE weights stay in sae/trained/ (ignored
by git); these files are what docs/sae.md cites.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pvlens.sae.doc_tables import sae_features_table as feature_table  # noqa: E402  (docs/sae.md's renderer)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "sae" / "results"
IMG = ROOT / "docs" / "img"


def condense(sae_dir: Path) -> dict:
    meta = json.loads((sae_dir / "pvlens_sae.json").read_text())
    meta.pop("heldout_sources", None)
    log = [json.loads(x) for x in (sae_dir / "train_log.jsonl").read_text().splitlines() if x.strip()]
    res = {"sae": sae_dir.name, "train": meta, "train_log_last": log[-1] if log else None, "train_log": log}
    if (sae_dir / "eval.json").exists():
        res["eval"] = json.loads((sae_dir / "eval.json").read_text())
    dec_dirs = sorted(sae_dir.glob("decompose-*"))
    for d in dec_dirs:
        full = json.loads((d / "decomposition.json").read_text())
        for fr in full["features"]:
            for c in fr["contexts"]:
                c.pop("values", None)
                c["text"] = "".join(f"[[{t}]]" if i == c["focus"] else t
                                    for i, t in enumerate(c.pop("tokens"))).replace("\n", "⏎")
        res[f"decomposition_{d.name.removeprefix('decompose-')}"] = full
        (OUT / f"{sae_dir.name}-decomposition.txt").write_text((d / "decomposition.txt").read_text())
        (OUT / f"{sae_dir.name}-features.md").write_text(feature_table(full))
        if (d / "dashboard.html").exists():
            (OUT / f"{sae_dir.name}-dashboard.html").write_text((d / "dashboard.html").read_text())
    (OUT / f"{sae_dir.name}.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))
    return res


def summary(path: Path) -> dict:
    """A trained SAE folder condensed, or an already-condensed record read back."""
    return json.loads(path.read_text()) if path.suffix == ".json" else condense(path)


def plots(results: list[dict]) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in results:
        if "eval" not in r:
            continue
        curve = r["eval"]["k_curve"]
        line, = ax.plot([c["k"] for c in curve], [c["fvu"] for c in curve], "--", marker=".", alpha=0.6,
                        label=f"{r['sae']}: inference top-k")
        ax.plot([r["eval"]["l0"]], [r["eval"]["fvu"]], "o", color=line.get_color(), ms=8,
                label=f"{r['sae']}: as saved (JumpReLU)")
    ax.axhline(0.15, color="grey", lw=0.8)
    ax.axvline(64, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("held-out FVU")
    ax.set_title("SmolLM2-135M-Instruct: shipped SAEs (targets: grey lines)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(IMG / "sae_fvu_l0.png", dpi=120)

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for r in results:
        log = r.get("train_log") or []
        if not log:
            print(f"{r['sae']}: no training log in its record, left out of sae_train_curve.png")
            continue
        ax.plot([x["tokens"] for x in log], [x["fvu"] for x in log], label=r["sae"])
    ax.set_yscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("training-batch FVU")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(IMG / "sae_train_curve.png", dpi=120)


if __name__ == "__main__":
    plots([summary(Path(p)) for p in sys.argv[1:]])
