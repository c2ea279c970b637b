"""Dataset-level numbers of a screening run: ΔP, the prompt-only approximations, the ranking
(top-k and flagged.jsonl), the histogram, AUROC, and the merge of shard results."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import spearmanr

from pvlens.core.chat import Message
from pvlens.io.atomic import read_json_checked, write_json_atomic, write_text_atomic
from pvlens.trainsets.screen.io import ScreenError, iter_samples, read_results


class ScreenSummary(BaseModel):
    """Dataset-level numbers of a screening run."""

    n: int = Field(description="Samples screened.")
    layer: int = Field(description="Block projected at.")
    delta_p: float = Field(description="Dataset ΔP: mean over samples of proj(response) − proj(base reply).")
    proj_mean: float = Field(description="Mean projection of the dataset's responses.")
    base_mean: float = Field(description="Mean projection of the base model's replies.")
    delta_std: float = Field(description="Standard deviation of sample-level ΔP.")
    approx: dict[str, float] = Field(
        description="Prompt-only approximations of dataset ΔP: mean(proj − last_prompt), "
        "mean(proj − prompt_avg).")
    approx_spearman: dict[str, float | None] = Field(
        description="Spearman ρ between each sample-level approximation and the full ΔP.")
    top: list[dict] = Field(description="The top-k samples by ΔP (index, delta).")
    skipped_too_long: int = Field(0, description="Samples skipped because they do not fit the model's context.")
    skipped_indices: list[int] = Field(default_factory=list,
                                       description="Indices of the skipped samples (the first 100).")
    files: dict[str, str] = Field(default_factory=dict, description="Files written.")


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def summarise(results: Sequence[dict], layer: int, top_k: int = 20) -> ScreenSummary:
    """Dataset ΔP, the approximations and how well they agree with the full ΔP; samples
    skipped as too long are counted, not averaged."""
    skipped = sorted(r["index"] for r in results if "skipped" in r)
    rs = sorted((r for r in results if "skipped" not in r), key=lambda r: r["index"])
    if not rs:
        raise ScreenError("no samples were screened (empty input, every sample too long for the "
                          f"model's context ({len(skipped)} skipped), or this shard got none)")
    delta = np.array([r["delta"] for r in rs], dtype=np.float64)
    proj = np.array([r["proj"] for r in rs], dtype=np.float64)
    approx = {k: proj - np.array([r[k] for r in rs], dtype=np.float64) for k in ("last_prompt", "prompt_avg")}
    order = sorted(rs, key=lambda r: -r["delta"])[:top_k]
    return ScreenSummary(
        n=len(rs), layer=layer, delta_p=float(delta.mean()), proj_mean=float(proj.mean()),
        base_mean=float(np.mean([r["base"] for r in rs])),
        delta_std=float(delta.std(ddof=1)) if len(rs) > 1 else 0.0,
        approx={k: float(v.mean()) for k, v in approx.items()},
        approx_spearman={k: _spearman(list(v), list(delta)) for k, v in approx.items()},
        top=[{"index": r["index"], "delta": r["delta"]} for r in order],
        skipped_too_long=len(skipped), skipped_indices=skipped[:100],
    )


def finish(out: Path, results: Sequence[dict], data: str | Path | None, split: str | None,
           top_k: int, layer: int) -> ScreenSummary:
    """Write screen.json, delta_hist.png and flagged.jsonl for a complete set of results."""
    summary = summarise(results, layer, top_k)
    deltas = [r["delta"] for r in results if "skipped" not in r]
    hist = histogram({"dataset": deltas}, out / "delta_hist.png",
                     title=f"sample-level ΔP (layer {layer}), dataset ΔP = {summary.delta_p:.3f}")
    summary.files = {"results": str(out / "results.jsonl"), "histogram": str(hist)}
    if data is not None and top_k > 0 and Path(data).exists():
        summary.files["flagged"] = str(export_flagged(data, summary.top, out / "flagged.jsonl", split))
    write_text_atomic(out / "screen.json", summary.model_dump_json(indent=2) + "\n")
    return summary


def export_flagged(data: str | Path, top: Sequence[dict], path: Path, split: str | None = None) -> Path:
    """The top-ranked samples with their messages and ΔP (a second streaming pass)."""
    want = {t["index"]: t["delta"] for t in top}
    found: dict[int, list[Message]] = {}
    for index, msgs in iter_samples(data, split):
        if index in want:
            found[index] = msgs
            if len(found) == len(want):
                break
    rows = [{"index": t["index"], "delta": t["delta"], "messages": found[t["index"]]}
            for t in top if t["index"] in found]
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def histogram(groups: dict[str, Sequence[float]], path: str | Path, title: str = "sample-level ΔP",
              bins: int = 40) -> Path:
    """Overlaid histograms of sample-level ΔP (one per named group), with their means."""
    from pvlens.io.viz import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 3.6))
    all_vals = np.concatenate([np.asarray(v, dtype=float) for v in groups.values()])
    edges = np.histogram_bin_edges(all_vals, bins=bins)
    for (name, values), color in zip(groups.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10, strict=False):
        arr = np.asarray(values, dtype=float)
        ax.hist(arr, bins=list(edges), alpha=0.55, color=color,
                label=f"{name} (n={len(arr)}, mean {arr.mean():.2f})")
        ax.axvline(float(arr.mean()), color=color, ls="--", lw=1)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("ΔP = proj(response) − proj(base reply)")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# --- merge ---------------------------------------------------------------------------------
def _shard_metas(dirs: Sequence[Path]) -> dict[tuple[int, int], tuple[dict, Path]]:
    """(i, n) → (meta, results path) of every shard found in `dirs`."""
    metas = {}
    for d in dirs:
        for p in sorted(d.glob("meta.shard-*-of-*.json")):
            m = read_json_checked(p)
            metas[tuple(m["shard"])] = (m, d / p.name.replace("meta", "results").replace(".json", ".jsonl"))
    if not metas:
        raise ScreenError(f"no shard results (meta.shard-*-of-*.json) in {', '.join(map(str, dirs))}")
    return metas


def _check_shards(metas: dict[tuple[int, int], tuple[dict, Path]]) -> int:
    """The shard count n, after checking that shards 0..n-1 are all there and from one run."""
    ns = {s[1] for s in metas}
    if len(ns) != 1:
        raise ScreenError(f"shards of different splits found (n = {sorted(ns)})")
    n = ns.pop()
    missing = [i for i in range(n) if (i, n) not in metas]
    if missing:
        raise ScreenError(f"missing shard(s) {missing} of {n}; run them with --shard i/{n} first")
    ref = metas[(0, n)][0]
    for (i, _), (m, _) in metas.items():
        for k in sorted(set(ref.get("inputs", {})) | set(m.get("inputs", {}))):
            a, b = m.get("inputs", {}).get(k), ref.get("inputs", {}).get(k)
            if a != b:
                raise ScreenError(f"shard {i}/{n} differs from shard 0 in {k}: {a} ≠ {b}")
    return n


def merge(out_dir: str | Path, shard_dirs: Sequence[str | Path] = (), data: str | Path | None = None,
          top_k: int | None = None) -> ScreenSummary:
    """Join shard results (from `out_dir` and any `shard_dirs`) into `out_dir/results.jsonl`
    and write the summary files; every shard 0..n-1 must be present and from the same run."""
    out = Path(out_dir)
    metas = _shard_metas([out, *[Path(d) for d in shard_dirs]])
    n = _check_shards(metas)
    results: dict[int, dict] = {}
    for i in range(n):
        part = read_results(metas[(i, n)][1])
        bad = [k for k in part if k % n != i]
        if bad:
            raise ScreenError(f"{metas[(i, n)][1]} holds samples of another shard (e.g. index {bad[0]})")
        results.update(part)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.jsonl",
                      "".join(json.dumps(results[k], ensure_ascii=False) + "\n" for k in sorted(results)))
    ref = metas[(0, n)][0]
    write_json_atomic(out / "meta.json", {**ref, "shard": [0, 1], "merged_from": n})
    k = top_k if top_k is not None else ref["config"].get("top_k", 20)
    return finish(out, list(results.values()), data or ref["data"], ref.get("split"), k, ref["layer"])


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    from sklearn.metrics import roc_auc_score

    if not positive or not negative:
        return math.nan
    y = [1] * len(positive) + [0] * len(negative)
    return float(roc_auc_score(y, list(positive) + list(negative)))

