"""Measure ΔP per severity: screen the shipped sets (first N samples each) with each trait's
own vector (runs/TRAIT/vectors.safetensors) at layer 15, one shared base-reply cache; writes
runs/screen_all/summary.json incrementally, AUROCs and histograms (numbers in docs/screen.md).

    python benchmarks/screen_levels.py [DATA_DIR] [N] [SETS]   # e.g. pvlens/data/datasets 50 evil,math
"""
import json
import sys
import time
from pathlib import Path

import pvlens
from pvlens.trainsets.screen import ScreenConfig, auroc, histogram, load_results, screen

DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pvlens/data/datasets")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100
SETS = sys.argv[3].split(",") if len(sys.argv) > 3 else ["evil", "math", "sycophantic", "hallucinating"]
OUT = Path("runs/screen_all")
LAYER = 15
model = pvlens.load_model()
cfg = ScreenConfig(layer=LAYER, top_k=10)
summ_path = OUT / "summary.json"
summary = json.loads(summ_path.read_text()) if summ_path.exists() else {}

def head(src, dst, n):
    lines = [x for x in Path(src).read_text().splitlines() if x.strip()][:n]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines) + "\n")
    return dst

for name in SETS:
    vec_traits = ["evil", "hallucinating"] if name == "math" else [name]
    for vt in vec_traits:
        vp = Path(f"runs/{vt}/vectors.safetensors")
        if not vp.exists():
            print("no vectors for", vt)
            continue
        for lv in ("normal", "level_i", "level_ii"):
            src = DATA / name / f"{lv}.jsonl"
            if not src.exists():
                print("missing", src)
                continue
            n = N if name != "math" else min(N, 60)
            f = head(src, OUT / "data" / f"{name}_{lv}_{n}.jsonl", n)
            t = time.time()
            s = screen(model, f, vp, OUT / f"{name}_{lv}_by_{vt}_{n}", cfg, cache_dir=OUT / "base_cache", progress=False)
            key = f"{name}/{lv}/{vt}"
            summary[key] = {"n": s.n, "layer": s.layer, "delta_p": s.delta_p, "proj_mean": s.proj_mean,
                            "base_mean": s.base_mean, "delta_std": s.delta_std, "approx": s.approx,
                            "approx_spearman": s.approx_spearman, "seconds": round(time.time() - t, 1),
                            "dir": str(OUT / f"{name}_{lv}_by_{vt}_{n}")}
            print(time.strftime("%H:%M:%S"), key, s.n, f"dP {s.delta_p:+.3f}", s.approx_spearman, f"{time.time()-t:.0f}s", flush=True)
            summ_path.write_text(json.dumps(summary, indent=2))
        d = {lv: [r["delta"] for r in load_results(summary[f"{name}/{lv}/{vt}"]["dir"])]
             for lv in ("normal", "level_i", "level_ii") if f"{name}/{lv}/{vt}" in summary}
        if "normal" in d and "level_ii" in d:
            summary[f"auroc/{name}/{vt}"] = {"level_ii_vs_normal": auroc(d["level_ii"], d["normal"]),
                                             **({"level_i_vs_normal": auroc(d["level_i"], d["normal"])} if "level_i" in d else {})}
            print("AUROC", name, vt, summary[f"auroc/{name}/{vt}"], flush=True)
            histogram(d, OUT / f"hist_{name}_by_{vt}.png", title=f"{name}: sample-level ΔP (layer {LAYER}, {vt} vector)")
        summ_path.write_text(json.dumps(summary, indent=2))
print("SCREEN DONE", flush=True)
