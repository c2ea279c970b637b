"""Scaling of Ray screening: samples/s with 2 one-thread workers ÷ 1 one-thread worker; and the
reply-token rate of bulk generation on the same kind of pool (`RayGenerator`), 1 vs 2 workers.

The default model screens the first `--n` samples of a shipped dataset (base replies generated,
nothing cached) on a local Ray cluster (127.0.0.1, no dashboard), with one worker and with two
in alternating rounds (load from other processes hits both sides), each worker an actor with
one CPU and one torch thread. Model loading and a warm-up
block per worker are outside the timing: the rate is the steady state a long run sees.

    python benchmarks/bench_ray.py [--n 16] [--rounds 2] [--block 4] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default 15 starves the workers beside any other job

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "pvlens/data/datasets/evil/level_ii.jsonl"
VECTORS = ROOT / "pvlens/data/vectors/smollm2-135m-instruct/evil.safetensors"
EVAL = ROOT / "pvlens/data/eval/evil.jsonl"
TARGET = 1.6


def timed(pool: Any, samples: list, u: Any, layer: int, facts: Any, cfg: Any) -> tuple[float, float]:
    """Wall seconds to screen `samples` on `pool` from an empty folder and cache (replies
    generated), and the workers' CPU seconds."""
    from tqdm.auto import tqdm

    from pvlens.io.jsonl import AppendLog
    from pvlens.trainsets.screen.base_replies import reply_store
    from pvlens.trainsets.screen.io import chunks
    from pvlens.trainsets.screen.ray_runner import RayRun

    with tempfile.TemporaryDirectory() as tmp:
        run = RayRun(pool, facts, u, layer, cfg, AppendLog(Path(tmp) / "results.jsonl"),
                     reply_store(Path(tmp) / "cache"), {})
        t0 = time.perf_counter()
        run.run(chunks(iter(samples), cfg.chunk_size), tqdm(disable=True))
        dt = time.perf_counter() - t0
    assert sorted(run.done) == [i for i, _ in samples]
    return dt, run.cpu_seconds


def rates(samples: list, warm: list, args: argparse.Namespace) -> tuple[float, float]:
    """Samples/s of one and of two one-thread workers, timed in alternating rounds (load from
    other processes hits both sides) on one pool of two actors; the one-worker side uses actor 0."""
    import ray

    from pvlens.trainsets.screen import ScreenConfig
    from pvlens.trainsets.screen.ray_runner import ModelLoader, RayOptions, WorkerPool
    from pvlens.trainsets.screen.run import direction_for

    cfg = ScreenConfig(layer=15, chunk_size=args.block, max_new_tokens=args.max_new_tokens)
    loader = ModelLoader(None, "cuda" if args.worker_gpus > 0 else "cpu")
    pool = WorkerPool(loader, RayOptions(workers=2, worker_cpus=1, worker_gpus=args.worker_gpus))
    try:
        facts = pool.facts(cfg)  # every model loaded
        layer, u = direction_for(facts.n_layers, facts.d_model, str(VECTORS), cfg.layer)
        ray.get([a.screen_block.remote(warm, {}, u, layer, cfg) for a in pool.actors])
        one = copy.copy(pool)
        one.actors, one.busy = pool.actors[:1], [0]
        t1 = t2 = c1 = c2 = 0.0
        for r in range(args.rounds):
            w, c = timed(one, samples, u, layer, facts, cfg)
            t1, c1 = t1 + w, c1 + c
            w, c = timed(pool, samples, u, layer, facts, cfg)
            t2, c2 = t2 + w, c2 + c
            print(f"round {r + 1}: 1 worker {t1:.1f}s wall, 2 workers {t2:.1f}s wall (cumulative)", flush=True)
    finally:
        pool.shutdown()
    n = len(samples) * args.rounds
    print(f"worker CPU s/sample: 1 worker {c1 / n:.2f}, 2 workers {c2 / n:.2f}; CPU-busy workers during "
          f"the run: 1 worker {c1 / t1:.2f}, 2 workers {c2 / t2:.2f} (2.0 = both had a core throughout)")
    print(f"RESULT ray_cpu cpu_s_per_sample_1={c1 / n:.3f} cpu_s_per_sample_2={c2 / n:.3f} "
          f"cores_1={c1 / t1:.3f} cores_2={c2 / t2:.3f}")
    return n / t1, n / t2


def gen_rates(args: argparse.Namespace) -> tuple[float, float, float]:
    """Reply tokens/s of `RayGenerator` (bulk generation on the pool) with one and with two
    one-thread actors, alternating rounds on one pool; also the replies' mean length."""
    import json

    from pvlens.core.config import SamplingConfig
    from pvlens.core.ray_bulk import RayGenerator
    from pvlens.core.ray_pool import RayOptions

    rows = [json.loads(line) for line in EVAL.read_text().splitlines() if line.strip()]
    prompts = [[{"role": "user", "content": r["question"]}] for r in rows[: args.gen_n]]
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=args.max_new_tokens)
    with RayGenerator(None, RayOptions(workers=2, worker_cpus=1), block_size=args.gen_block) as gen:
        both = gen.pool
        one = copy.copy(both)
        one.actors, one.busy = both.actors[:1], [0]
        gen(None, prompts[:2], sampling)  # warm-up on both actors
        t1 = t2 = 0.0
        for _ in range(args.rounds):
            for pool in (one, both):
                gen.pool = pool
                t0 = time.perf_counter()
                texts = gen(None, prompts, sampling).texts
                dt = time.perf_counter() - t0
                t1, t2 = (t1 + dt, t2) if pool is one else (t1, t2 + dt)
        gen.pool = both
    import pvlens  # after the timing: the driver needs only the tokenizer; greedy replies are the same every round

    tokenizer = pvlens.load_model(None).tokenizer
    tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    n_tok = tokens * args.rounds
    return n_tok / t1, n_tok / t2, tokens / len(prompts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="samples per round and side")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (1 worker, then 2)")
    ap.add_argument("--block", type=int, default=4, help="samples per block (ScreenConfig.chunk_size)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="base reply length")
    ap.add_argument("--worker-gpus", type=float, default=0.0, help="GPUs per worker (GPU rate on a GPU node)")
    ap.add_argument("--gen-n", type=int, default=32, help="chat prompts per round and side of the generation rate")
    ap.add_argument("--gen-block", type=int, default=8, help="prompts per generation block")
    args = ap.parse_args()
    import ray

    from pvlens.trainsets.screen import iter_samples

    rows = list(iter_samples(DATA))
    warm, samples = rows[-2:], rows[: args.n]
    print(f"data: {DATA.name}, {len(samples)} samples, block {args.block}, max_new_tokens {args.max_new_tokens}; "
          f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    ray.init(address="local", num_cpus=2, num_gpus=None if args.worker_gpus > 0 else 0,
             include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        one, two = rates(samples, warm, args)
        g1, g2, mean_len = gen_rates(args) if args.worker_gpus == 0 else (float("nan"),) * 3
    finally:
        ray.shutdown()
    print(f"1 worker: {one:.3f} samples/s; 2 workers: {two:.3f} samples/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"per-worker rate (1 thread): {one:.3f} samples/s; 1M samples ≈ {1e6 / one / 3600:.0f} worker-hours")
    print(f"RESULT ray_rates samples_per_s_1={one:.4f} samples_per_s_2={two:.4f} n={len(samples)} rounds={args.rounds} "
          f"load_after={os.getloadavg()[0]:.2f}")
    print(f"generation (RayGenerator, greedy, {args.gen_n} chat prompts, mean reply {mean_len:.1f} tokens): "
          f"1 worker {g1:.1f} reply tokens/s, 2 workers {g2:.1f}")
    print(f"RESULT ray_gen_rates tokens_per_s_1={g1:.2f} tokens_per_s_2={g2:.2f} n={args.gen_n} "
          f"mean_reply_tokens={mean_len:.1f} block={args.gen_block}")
    print(f"RESULT ray_screen_scaling ratio={two / one:.2f} target={TARGET}")


if __name__ == "__main__":
    main()
