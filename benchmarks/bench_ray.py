"""Scaling of Ray screening: samples/s with 2 one-thread workers ÷ 1 one-thread worker.

The default model screens the first `--n` samples of a shipped dataset (base replies generated,
nothing cached) on a local Ray cluster (127.0.0.1, no dashboard), first with one worker, then
with two, each worker an actor with one CPU and one torch thread. Model loading and a warm-up
block per worker are outside the timing: the rate is the steady state a long run sees.

    python benchmarks/bench_ray.py [--n 32] [--block 4] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "pvlens/data/datasets/evil/level_ii.jsonl"
VECTORS = ROOT / "pvlens/data/vectors/smollm2-135m-instruct/evil.safetensors"
TARGET = 1.6


def rate(workers: int, samples: list, warm: list, args: argparse.Namespace) -> float:
    """Steady-state samples/s of a pool of `workers` one-thread actors."""
    import ray
    from tqdm.auto import tqdm

    from pvlens.io.jsonl import AppendLog
    from pvlens.trainsets.screen import ScreenConfig
    from pvlens.trainsets.screen.base_replies import reply_store
    from pvlens.trainsets.screen.io import chunks
    from pvlens.trainsets.screen.ray_runner import ModelLoader, RayOptions, RayRun, WorkerPool
    from pvlens.trainsets.screen.run import direction_for

    cfg = ScreenConfig(layer=15, chunk_size=args.block, max_new_tokens=args.max_new_tokens)
    pool = WorkerPool(ModelLoader(None, "cpu"), RayOptions(workers=workers, worker_cpus=1))
    try:
        facts = pool.facts(cfg)  # every model loaded
        layer, u = direction_for(facts.n_layers, facts.d_model, str(VECTORS), cfg.layer)
        ray.get([a.screen_block.remote(warm, {}, u, layer, cfg) for a in pool.actors])
        with tempfile.TemporaryDirectory() as tmp:
            run = RayRun(pool, facts, u, layer, cfg, AppendLog(Path(tmp) / "results.jsonl"),
                         reply_store(Path(tmp) / "cache"), {})
            t0 = time.perf_counter()
            run.run(chunks(iter(samples), cfg.chunk_size), tqdm(disable=True))
            dt = time.perf_counter() - t0
        assert sorted(run.done) == [i for i, _ in samples]
    finally:
        pool.shutdown()
    print(f"{workers} worker(s): {len(samples)} samples in {dt:.1f}s = {len(samples) / dt:.3f} samples/s")
    return len(samples) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="samples timed")
    ap.add_argument("--block", type=int, default=4, help="samples per block (ScreenConfig.chunk_size)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="base reply length")
    args = ap.parse_args()
    import ray

    from pvlens.trainsets.screen import iter_samples

    rows = list(iter_samples(DATA))
    warm, samples = rows[-2:], rows[: args.n]
    print(f"data: {DATA.name}, {len(samples)} samples, block {args.block}, max_new_tokens {args.max_new_tokens}; "
          f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        one = rate(1, samples, warm, args)
        two = rate(2, samples, warm, args)
    finally:
        ray.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"per-worker rate (1 thread): {one:.3f} samples/s; 1M samples ≈ {1e6 / one / 3600:.0f} worker-hours")
    print(f"RESULT ray_screen_scaling ratio={two / one:.2f} target={TARGET}")


if __name__ == "__main__":
    main()
