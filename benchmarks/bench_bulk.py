"""Bulk generation near the machine's limit: `bulk_generate` vs HF `generate` vs the matmul rate.

Workload: --n chat prompts (pvlens/data/sae_prompts.jsonl), greedy, up to --new-tokens tokens,
stopping at the end-of-turn token, so rows end at different times (the case continuous batching
is for). pvlens runs `bulk_generate` at its default (auto) batch size; HF `generate` runs the
same prompts in length-sorted fixed batches at each of --hf-batch-sizes, and its best is used.
The same run times a matmul of every weight shape of the model at pvlens's own row count (its
slots; --matmul-rows overrides), each weight in every layout the engine may use (`x @ W` over
[in, out], `F.linear` over [out, in], in fp32 where MKL runs it, [out, in] prepacked for MKL's
GEMM (the engine's bulk unembedding), and in bf16 where oneDNN runs it, [out, in] reordered
once for oneDNN) and the fastest kept: the machine's best for that arithmetic, which bounds
what it allows. Work is counted as useful tokens (prompt tokens + reply
tokens up to and including end-of-turn, no padding) × FLOPs per token (2 × every matmul weight
incl. the unembedding, + attention over the row's context); for pvlens, which computes a
prompt prefix shared by several rows once, the prompt tokens are those it actually ran. Rates are per CPU-second of this
process (one thread), so other processes on a shared machine slow the wall clock but not the
ratios much; the 1-minute load average is printed before and after. The machine's speed also
drifts (a virtual machine's neighbours): --repeats rounds each time the matmul, pvlens and HF at
every batch size in turn, and the medians (and each round's ratio) are reported. Before the
rounds each side runs once at full size, untimed there (its CPU-seconds are printed and kept):
a process's first call packs weights and touches fresh memory, and what the first side frees
the second reuses, so timing the first call would charge it to whichever side ran first. A short matmul
probe just before and after each side reads the speed that side met; pvlens ÷ HF with each
side's rate divided by its probe's is printed beside the RESULT as a drift-adjusted check (the
RESULT itself stays the plain ratio). glibc keeps freed memory for reuse, as in every `pvlens`
command (process-wide, so for both sides; PVLENS_KEEP_FREED_MEMORY=0 leaves glibc's defaults,
what a notebook gets); the results file records which.

    python benchmarks/bench_bulk.py [--n 96] [--new-tokens 64] [--hf-batch-sizes 32,64,96]
        [--dtype float32|bfloat16]

Ends with `RESULT bulk_generate_peak_fraction ratio=<x> target=0.6` and
`RESULT bulk_generate_vs_hf ratio=<x> target=1.5`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
PROBE_CALLS = 2
"""Passes over the model's shapes per speed probe (well under a second at the default size)."""


def prompts(n: int) -> list[str]:
    rows = (ROOT / "pvlens/data/sae_prompts.jsonl").read_text().splitlines()
    return [json.loads(r)["prompt"] for r in rows[:n]]


def layer_shapes(cfg) -> list[tuple[int, int]]:
    """[in, out] of one block's matmul weights: fused q/k/v, o, gate, up, down."""
    kv = cfg.n_key_value_heads or cfg.n_heads
    d_attn = cfg.n_heads * cfg.d_head
    return [(cfg.d_model, d_attn + 2 * kv * cfg.d_head), (d_attn, cfg.d_model),
            (cfg.d_model, cfg.d_mlp), (cfg.d_model, cfg.d_mlp), (cfg.d_mlp, cfg.d_model)]


def flops_per_token(model, context: float) -> float:
    """2 × matmul weights (every block's, unembedding) + QK and AV over `context` keys."""
    cfg = model.cfg
    weights = cfg.n_layers * sum(a * b for a, b in layer_shapes(cfg)) + cfg.d_model * cfg.d_vocab
    return 2.0 * weights + 4.0 * cfg.n_layers * cfg.n_heads * cfg.d_head * context


class MatmulProbe:
    """The model's weight shapes as random matrices on `rows` rows, in each layout the engine
    may hold them in (`x @ W` over [in, out], `F.linear` over [out, in], in fp32 where MKL runs
    it, [out, in] prepacked for MKL's GEMM, and in bf16 where oneDNN runs it, [out, in]
    reordered once for oneDNN's kernels), kept so the machine's matmul speed can be
    read at any moment of the run (made once: filling them takes longer than timing them)."""

    def __init__(self, model, rows: int, dtype: torch.dtype = torch.float32):
        import torch.nn.functional as F

        from pvlens.core.engine import mkl_linear, mkldnn_bf16_packing, onednn_linear, onednn_pack

        shapes = [*layer_shapes(model.cfg), (model.cfg.d_model, model.cfg.d_vocab)]
        in_out = [torch.randn(a, b, dtype=dtype) for a, b in shapes]
        out_in = [w.t().contiguous() for w in in_out]
        xs = [torch.randn(rows, a, dtype=dtype) for a, _ in shapes]
        self.rows = rows
        self.flop = sum(2.0 * rows * a * b for a, b in shapes)
        self.layouts = {
            "x @ W": lambda: [x @ w for x, w in zip(xs, in_out, strict=True)],
            "F.linear": lambda: [F.linear(x, w) for x, w in zip(xs, out_in, strict=True)],
        }
        if dtype == torch.bfloat16 and mkldnn_bf16_packing():
            # the weights as the engine holds them in bf16 there: reordered once for oneDNN
            packed = [onednn_pack(w) for w in out_in]
            self.layouts["oneDNN packed"] = lambda: [
                onednn_linear(x, w) for x, w in zip(xs, packed, strict=True)]
        mkl_packed = mkl_packing(out_in, rows) if dtype == torch.float32 else None
        if mkl_packed is not None:
            # as the engine holds the unembedding for bulk runs in fp32 (`pack_unembed`)
            self.layouts["MKL packed"] = lambda: [
                mkl_linear(x, p, w, rows) for x, (p, w) in zip(xs, mkl_packed, strict=True)]

    def rate(self, layout: str, calls: int = 10) -> float:
        """FLOP per CPU-second of `calls` passes over every shape in `layout`."""
        c0 = time.process_time()
        for _ in range(calls):
            self.layouts[layout]()
        return calls * self.flop / (time.process_time() - c0)

    def around(self, layout: str, run: Callable[[], T]) -> tuple[T, float, list[float]]:
        """(`run()`'s result, its CPU seconds, the probe's GFLOP/s just before and just after)."""
        before = self.rate(layout, PROBE_CALLS)
        out, sec = cpu_timed(run)
        return out, sec, [before / 1e9, self.rate(layout, PROBE_CALLS) / 1e9]


def mkl_packing(out_in: Sequence[torch.Tensor], rows: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Each [out, in] fp32 weight with its copy prepacked by MKL for products of `rows` rows
    (`engine.mkl_pack`, as the engine's packed unembedding, `FastEngine.pack_unembed`), or None
    on a build without MKL's packed GEMM."""
    from pvlens.core.engine import mkl_pack

    packed = [mkl_pack(w, rows) for w in out_in]
    if any(p is None for p in packed):
        return None
    return [(p, w) for p, w in zip(packed, out_in, strict=True) if p is not None]


def cpu_timed(run: Callable[[], T]) -> tuple[T, float]:
    """(`run()`'s result, the CPU seconds this process spent in it)."""
    c0 = time.process_time()
    out = run()
    return out, time.process_time() - c0


def matmul_rate(model, rows: int, dtype: torch.dtype = torch.float32, repeats: int = 5,
                probe: MatmulProbe | None = None) -> tuple[float, str]:
    """FLOP per CPU-second of the model's weight shapes on `rows` rows (best of `repeats`), in
    the fastest weight layout, and which one that was.

    Every layout counts because which is faster depends on the dtype and the CPU (the engine
    picks per dtype, `FastEngine.out_in`); a reference in the slower one would flatter the
    peak fraction (bf16 on an AMD EPYC with avx512-bf16: `x @ W` 141 GFLOP/s vs `F.linear` 158
    at 64 rows)."""
    probe = probe or MatmulProbe(model, rows, dtype)
    best: dict[str, float] = dict.fromkeys(probe.layouts, 0.0)
    for _ in range(repeats):  # the layouts alternate, so drift hits both alike
        for name in probe.layouts:
            best[name] = max(best[name], probe.rate(name))
    layout = max(best, key=lambda k: best[k])
    return best[layout], layout


def drift_adjusted(ratio: float, pv_probe: Sequence[float], hf_probe: Sequence[float]) -> float:
    """pvlens ÷ HF as if both sides had run at the same machine speed: each side's rate divided
    by the mean matmul-probe rate read just before and just after it. A virtual machine's speed
    moves over minutes (neighbours), and the sides run minutes apart; the probe reads the
    speed the side met, so a slow spell during one side does not pass for that side's code."""
    return ratio * statistics.fmean(hf_probe) / statistics.fmean(pv_probe)


def useful_tokens(chats, replies, finished) -> tuple[int, int, float]:
    """(prompt tokens, reply tokens incl. end-of-turn, mean attention context per token)."""
    p = sum(len(c.ids) for c in chats)
    r = sum(len(x) + int(f) for x, f in zip(replies, finished, strict=True))
    ctx = sum(len(c.ids) * len(c.ids) / 2 + (len(x) + f) * (len(c.ids) + (len(x) + f) / 2)
              for c, x, f in zip(chats, replies, finished, strict=True)) / max(p + r, 1)
    return p, r, ctx


def count_prefill_tokens() -> list[int]:
    """A one-element counter of the real (non-padding) tokens that pvlens's engine runs in
    multi-token (prefill) forwards from now on."""
    from pvlens.core.engine import FastEngine

    counter = [0]
    real = FastEngine.forward

    def counted(self, tokens, positions, *args, **kwargs):
        cache = args[0] if args else kwargs.get("cache")
        if cache is None or cache.lengths is None:  # a prefill (decoding uses slot-mode caches)
            counter[0] += int((positions >= 0).sum())
        return real(self, tokens, positions, *args, **kwargs)

    FastEngine.forward = counted  # type: ignore[method-assign]
    return counter


def run_hf(hf, chats, pad_id: int, stops: set[int], n_new: int, batch: int) -> tuple[list, list]:
    """HF greedy generate in length-sorted fixed batches; (replies, finished)."""
    order = sorted(range(len(chats)), key=lambda i: len(chats[i].ids))
    replies: list = [None] * len(chats)
    fin: list = [False] * len(chats)
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        width = max(len(chats[i].ids) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            ids[j, width - len(chats[i].ids):] = torch.tensor(chats[i].ids)
            mask[j, width - len(chats[i].ids):] = 1
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=mask, max_new_tokens=n_new, do_sample=False,
                              pad_token_id=pad_id, eos_token_id=sorted(stops))
        for j, i in enumerate(idx):
            row = out[j, width:].tolist()
            cut = next((k for k, t in enumerate(row) if t in stops), None)
            replies[i], fin[i] = (row[:cut], True) if cut is not None else (row, False)
    return replies, fin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=96, help="prompts")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--hf-batch-sizes", default="32,64,96")
    ap.add_argument("--batch-size", type=int, default=None, help="pvlens slots (default: auto)")
    ap.add_argument("--matmul-rows", type=int, default=None, help="rows of the matmul reference (default: pvlens's slots)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--dtype", default="float32", help="compute dtype of both sides and of the matmul "
                    "(float32, or bfloat16 where the CPU has AMX / avx512-bf16)")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from pvlens.core.allocator import keep_freed_memory_unless_opted_out

    kept = keep_freed_memory_unless_opted_out()  # see the module docstring

    import pvlens
    from pvlens.core.bulk import bulk_generate
    from pvlens.core.chat import stop_token_ids
    from pvlens.core.config import SamplingConfig
    from pvlens.core.machine import machine_facts
    from pvlens.core.model import ensure_default_model_dir, load_hf_model

    load0 = os.getloadavg()[0]
    dtype = getattr(torch, args.dtype)
    model = pvlens.load_model(dtype=torch.float32)  # fp32 weights; the engine packs them in `dtype`
    hf, _ = load_hf_model(ensure_default_model_dir(), dtype=dtype)
    tok = model.tokenizer
    chats = [pvlens.encode_prompt(tok, t) for t in prompts(args.n)]
    stops = stop_token_ids(tok)
    sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0.0)
    batches = [int(x) for x in args.hf_batch_sizes.split(",")]
    # each side once at full size before the rounds, untimed there (see the module docstring)
    _, warm_pv = cpu_timed(lambda: bulk_generate(model, chats, sampling, batch_size=args.batch_size, dtype=dtype))
    _, warm_hf = cpu_timed(lambda: run_hf(hf, chats, tok.pad_token_id, stops, args.new_tokens, max(batches)))
    print(f"warm-up (first call of each side in this process, pvlens first): pvlens {warm_pv:.1f} CPU-s, "
          f"HF batch {max(batches)} {warm_hf:.1f} CPU-s; glibc keeps freed memory: {kept}", flush=True)

    from pvlens.core.bulk import auto_batch_size
    from pvlens.core.engine import engine_for

    engine = engine_for(model, dtype)
    assert engine is not None
    res_batch = args.batch_size or auto_batch_size(
        engine, len(chats), max(len(c.ids) for c in chats) + args.new_tokens)
    prefilled = count_prefill_tokens()
    probe = MatmulProbe(model, args.matmul_rows or res_batch, dtype)
    rounds: list[dict] = []
    pv_replies: list | None = None
    for k in range(args.repeats):  # rounds interleave the sides, so drift in the machine's speed
        rate, layout = matmul_rate(model, probe.rows, dtype, probe=probe)  # hits them alike
        prefilled[0] = 0
        res, pv_sec, pv_probe = probe.around(layout, lambda: bulk_generate(
            model, chats, sampling, batch_size=args.batch_size, dtype=dtype))
        replies = [c.response_ids for c in res.chats]
        if pv_replies is not None and replies != pv_replies:
            raise SystemExit("pvlens's greedy replies changed between rounds")
        pv_replies = replies
        p, r, ctx = useful_tokens(chats, pv_replies, res.finished)
        # pvlens computes a shared prompt prefix once: the arithmetic it did counts the prompt
        # tokens it ran, not every prompt's (that would credit it with work it skipped)
        p_run = prefilled[0]
        pv_flop = (p_run + r) * flops_per_token(model, ctx)
        print(f"round {k + 1}: matmul {rate / 1e9:.1f} GFLOP/s ({layout}); pvlens bulk_generate ({res_batch} slots, "
              f"{args.dtype}): {len(chats)} prompts, {p} prompt ({p_run} computed: shared prefixes once) "
              f"+ {r} reply tokens, {sum(res.finished)} ended before {args.new_tokens}; {pv_sec:.1f} CPU-s, "
              f"{r / pv_sec:.1f} reply tok/s, {pv_flop / pv_sec / 1e9:.1f} GFLOP/s", flush=True)
        hf_sec, hf_tokens, hf_same, hf_probe = {}, {}, {}, {}
        for b in batches:
            (hf_replies, fin), sec, hf_probe[b] = probe.around(
                layout, lambda b=b: run_hf(hf, chats, tok.pad_token_id, stops, args.new_tokens, b))
            _, hr, _ = useful_tokens(chats, hf_replies, fin)
            same = sum(a == x for a, x in zip(hf_replies, pv_replies, strict=True))
            hf_sec[b], hf_tokens[b], hf_same[b] = sec, hr, same
            print(f"  HF generate batch {b}: {hr} reply tokens, {sec:.1f} CPU-s, {hr / sec:.1f} reply tok/s "
                  f"(identical replies to pvlens: {same}/{len(chats)})", flush=True)
        rounds.append({"matmul_gflops": rate / 1e9, "matmul_layout": layout, "pvlens_cpu_s": pv_sec, "hf_cpu_s": hf_sec,
                       "hf_reply_tokens": hf_tokens, "identical_to_pvlens": hf_same,
                       "probe_gflops": {"pvlens": pv_probe, "hf": hf_probe}})
    med = statistics.median
    pv_sec = med(x["pvlens_cpu_s"] for x in rounds)
    # each batch size's own reply tokens (at bf16 HF's replies change with the batch)
    hf_rates = {b: med(x["hf_reply_tokens"][b] / x["hf_cpu_s"][b] for x in rounds) for b in batches}
    best_b = max(hf_rates, key=lambda b: hf_rates[b])
    vs_rounds = [(r / x["pvlens_cpu_s"]) / (x["hf_reply_tokens"][best_b] / x["hf_cpu_s"][best_b]) for x in rounds]
    adjusted_rounds = [drift_adjusted(v, x["probe_gflops"]["pvlens"], x["probe_gflops"]["hf"][best_b])
                       for v, x in zip(vs_rounds, rounds, strict=True)]
    peak_rounds = [pv_flop / x["pvlens_cpu_s"] / (x["matmul_gflops"] * 1e9) for x in rounds]
    rate = med(x["matmul_gflops"] for x in rounds) * 1e9
    peak, vs_hf = med(peak_rounds), med(vs_rounds)
    load1 = os.getloadavg()[0]
    print(f"medians of {args.repeats} rounds: pvlens {r / pv_sec:.1f} reply tok/s; HF "
          + ", ".join(f"batch {b} {v:.1f}" for b, v in hf_rates.items())
          + f"; pvlens ÷ HF (batch {best_b}) per round {', '.join(f'{v:.2f}' for v in vs_rounds)}; "
          f"load average (1 min) {load0:.1f} before, {load1:.1f} after; threads {torch.get_num_threads()}")
    print(f"drift adjusted (each side's rate ÷ the matmul probe around it): pvlens ÷ HF {med(adjusted_rounds):.2f}, "
          f"per round {', '.join(f'{v:.2f}' for v in adjusted_rounds)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "machine": machine_facts(), "dtype": args.dtype, "pvlens_batch": res_batch, "pvlens_batch_auto": args.batch_size is None,
            "n_prompts": len(chats), "max_new_tokens": args.new_tokens, "prompt_tokens": p,
            "prompt_tokens_computed": p_run, "reply_tokens": r, "repeats": args.repeats,
            "ended_early": sum(res.finished),
            "pvlens_reply_tok_per_cpu_s": r / pv_sec, "pvlens_gflops": pv_flop / pv_sec / 1e9,
            "matmul_gflops": rate / 1e9, "matmul_rows": args.matmul_rows or res_batch,
            "matmul_layouts": list(probe.layouts), "hf_reply_tok_per_cpu_s": hf_rates, "hf_best_batch": best_b,
            "peak_fraction": peak, "vs_hf": vs_hf, "vs_hf_rounds": vs_rounds, "peak_fraction_rounds": peak_rounds,
            "vs_hf_drift_adjusted": med(adjusted_rounds), "vs_hf_drift_adjusted_rounds": adjusted_rounds,
            "rounds": rounds, "load_average_1min": [load0, load1],
            "warmup_cpu_s": {"pvlens": warm_pv, "hf": warm_hf, "hf_batch": max(batches)},
            "keep_freed_memory": kept,
        }, indent=2))
    print(f"RESULT bulk_generate_peak_fraction ratio={peak:.2f} target=0.6")
    print(f"RESULT bulk_generate_vs_hf ratio={vs_hf:.2f} target=1.5")


if __name__ == "__main__":
    main()
