"""Generation speed: pvlens *steered* vs plain Hugging Face `generate` *unsteered*.

Same model (the offline default, SmolLM2-135M-Instruct), same dtype (the model's, fp32 unless
--dtype), same chat-templated prompts, greedy, exactly --new-tokens tokens per row on both sides
(HF: `min_new_tokens`; pvlens: `stop_at_eos=False`), at each batch size. pvlens steers with a
random vector at layer 15 on the response positions (the paper's setting), so the steering
hook's cost is included. Both sides are timed in the same run, interleaved (A, B, A, B, ...)
because other processes may share the cores; the medians are compared.

    python benchmarks/bench_generate.py [--repeats 3] [--batch-sizes 1,8] [--new-tokens 64]

Target: pvlens tokens/s ÷ HF tokens/s ≥ 1.0 at every batch size. Ends with one line per target:
`RESULT generate_b<batch> ratio=<x> target=1.0`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.0


def prompts(n: int) -> list[str]:
    rows = (ROOT / "pvlens/data/sae_prompts.jsonl").read_text().splitlines()
    return [json.loads(r)["prompt"] for r in rows[:n]]


def hf_generate(hf, chats, pad_id: int, n_new: int) -> int:
    """Plain HF greedy generation of exactly n_new tokens per row (left-padded batch)."""
    width = max(len(c.ids) for c in chats)
    ids = torch.full((len(chats), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, c in enumerate(chats):
        ids[i, width - len(c.ids):] = torch.tensor(c.ids)
        mask[i, width - len(c.ids):] = 1
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=n_new, min_new_tokens=n_new,
                          do_sample=False, pad_token_id=pad_id)
    n = out.shape[1] - width
    assert n == n_new, f"HF generated {n} tokens, expected {n_new}"
    return n * len(chats)


def pvlens_generate(model, chats, steering, n_new: int) -> int:
    import pvlens

    res = pvlens.generate(model, chats, steer=steering, max_new_tokens=n_new, stop_at_eos=False,
                          batch_size=len(chats), progress=False)
    lens = {c.response_len for c in res.chats}
    assert lens == {n_new}, f"pvlens generated {lens} tokens, expected {n_new}"
    return n_new * len(chats)


def timed(fn) -> tuple[float, float, int]:
    """Wall-clock and process CPU seconds of one call, and the tokens it generated."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    return time.perf_counter() - t0, time.process_time() - c0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side and batch size")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", help="float32 or bfloat16 (both sides)")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table per side")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import pvlens
    from pvlens.core.device import as_dtype
    from pvlens.core.model import ensure_default_model_dir, load_hf_model

    dtype = as_dtype(args.dtype)
    model = pvlens.load_model(dtype=dtype)
    hf, _ = load_hf_model(ensure_default_model_dir(), dtype=dtype)
    tok = model.tokenizer
    g = torch.Generator().manual_seed(0)
    v = torch.randn(model.cfg.d_model, generator=g)
    steering = pvlens.Steering(v / v.norm() * 8.0, args.layer, 1.0, positions="response")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    texts = prompts(max(sizes))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {dtype}, "
          f"{args.new_tokens} new tokens, steering at layer {args.layer} (‖αv‖ = 8)", flush=True)

    results, cpu_ratio = {}, {}
    for b in sizes:
        chats = [pvlens.encode_prompt(tok, t) for t in texts[:b]]
        run_hf = functools.partial(hf_generate, hf, chats, tok.pad_token_id, args.new_tokens)
        run_pv = functools.partial(pvlens_generate, model, chats, steering, args.new_tokens)
        run_hf(), run_pv()  # warm-up (allocations, weight packing)
        if args.profile:
            profile(run_hf, f"HF batch {b}")
            profile(run_pv, f"pvlens batch {b}")
        tps = {"hf": [], "pv": []}  # tokens per wall-clock second
        cps = {"hf": [], "pv": []}  # tokens per CPU second (less sensitive to other processes)
        for _ in range(args.repeats):
            for side, fn in (("hf", run_hf), ("pv", run_pv)):
                sec, cpu, n = timed(fn)
                tps[side].append(n / sec)
                cps[side].append(n / cpu)
        med = {k: statistics.median(v) for k, v in tps.items()}
        cmed = {k: statistics.median(v) for k, v in cps.items()}
        results[b] = med["pv"] / med["hf"]
        cpu_ratio[b] = cmed["pv"] / cmed["hf"]
        print(f"batch {b}: HF unsteered {med['hf']:6.1f} tok/s {fmt(tps['hf'])} | pvlens steered "
              f"{med['pv']:6.1f} tok/s {fmt(tps['pv'])} | per CPU-second: HF {cmed['hf']:.1f}, "
              f"pvlens {cmed['pv']:.1f} (ratio {cmed['pv'] / cmed['hf']:.2f})", flush=True)
    for b, r in results.items():
        print(f"RESULT generate_b{b}_per_cpu_second ratio={cpu_ratio[b]:.2f}")
        print(f"RESULT generate_b{b} ratio={r:.2f} target={TARGET}")


def fmt(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.1f}" for x in xs) + "]"


def profile(fn, label: str) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with prof(activities=[ProfilerActivity.CPU]) as p:
        fn()
    print(f"--- profile: {label} ---")
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
