"""Markdown tables of the committed benchmark results (bench_scale, bench_bulk, bench_invariance)
for the docs.

One renderer, `benchmark_table`, recognises which benchmark wrote the JSON by its keys, so the
docs' generated blocks need one entry in `pvlens.io.doctables.renderers()`.
"""

from __future__ import annotations

from typing import Any

from pvlens.core.machine import describe


def _machine(data: dict[str, Any]) -> str:
    """The machine the numbers were measured on (older results files did not record it)."""
    return describe(data["machine"]) if "machine" in data else "not recorded in this results file"


def benchmark_table(data: dict[str, Any]) -> str:
    """The table of a `bench_scale.py` or `bench_bulk.py` results file."""
    if "models" in data:
        return scale_table(data)
    if "sampled" in data and "greedy" in data:
        return invariance_table(data)
    return bulk_table(data)


def invariance_table(data: dict[str, Any]) -> str:
    """`bench_invariance.py`: identical replies for each pair of runs, sampled and greedy."""
    lines = ["| decoding | run A | run B | identical replies | first difference at token |",
             "|---|---|---|---|---|"]
    for name in ("sampled", "greedy"):
        for p in data[name]:
            at = ", ".join(str(i) for i in p["first_difference_at"]) or "—"
            lines.append(f"| {name} | {p['a']} | {p['b']} | {p['identical']} / {p['rows']} | {at} |")
    return "\n".join(lines) + f"\n\nMachine: {_machine(data)}.\n"


def _ratio(pv: float, hf: float) -> str:
    return f"{pv:.1f} / {hf:.1f} ({pv / hf:.2f}×)"


def scale_table(data: dict[str, Any]) -> str:
    """One row per measurement, one column per model: pvlens / HF (ratio)."""
    models = data["models"]
    names = list(models)
    unit = "s" if data["device"].startswith("cuda") else "CPU-s"
    lines = [f"| measurement (pvlens / HF, {data['device']}, {data['dtype']}, "
             f"{data['threads']} thread(s)) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(models[n]) for n in names) + " |")

    row("parameters", lambda m: f"{m['params'] / 1e6:.0f} M")
    first = models[names[0]]
    if "engine_pack_s" in first:
        row(f"pvlens fast-engine weight packing, once per model ({unit})", lambda m: f"{m['engine_pack_s']:.1f}")
    warm = "repeats" in next(iter(first["generation"].values()))
    for b in first["generation"]:
        row(f"generation, batch {b} (new tokens per {unit}{'; warmed up, median' if warm else '; first call, cold'})",
            lambda m, b=b: _ratio(m["generation"][b]["pvlens_tok_s"], m["generation"][b]["hf_tok_s"]))
    row(f"all-layer activation pass (tokens per {unit})",
        lambda m: _ratio(m["activations"]["pvlens_tok_s"], m["activations"]["hf_tok_s"]))
    row(f"LoRA step, 4 conversations ({unit}; lower is better)",
        lambda m: _ratio(m["lora"]["pvlens_step_s"], m["lora"]["hf_step_s"]))

    def stream(m: dict[str, Any], n: str) -> str:
        if "stream_result_mb" not in m:
            return f"{m['stream_extra_mb'][n]:.0f}"
        result = m["stream_result_mb"][n]
        return f"{m['stream_extra_mb'][n] - result:.0f} (+ {result:.0f} of result)"

    heap = "stream_heap_mb" in models[names[0]]
    for n in models[names[0]]["stream_extra_mb"]:
        beyond = "; beyond its result" if "stream_result_mb" in models[names[0]] else ""
        row(f"streaming activation pass over {n} conversations: extra peak {'RSS ' if heap else ''}MB (pvlens{beyond})",
            lambda m, n=n: stream(m, n))
    if heap:
        for n in models[names[0]]["stream_heap_mb"]:
            row(f"streaming activation pass over {n} conversations, rerun: extra peak live heap MB "
                "(pvlens; beyond its result)",
                lambda m, n=n: f"{m['stream_heap_mb'][n] - m['stream_result_mb'][n]:.1f} "
                               f"(+ {m['stream_result_mb'][n]:.0f} of result)")
        for n in models[names[0]].get("stream_heap_retained_mb", {}):
            row(f"streaming activation pass over {n} conversations, first run: heap left allocated "
                "after it (library caches), MB",
                lambda m, n=n: f"{m['stream_heap_retained_mb'][n]:.1f}")
    row("peak memory of the whole run, MB", lambda m: f"{m['peak_mb']:.0f}")
    load = (data.get("load_average_1min_before"), data.get("load_average_1min_after"))
    return ("\n".join(lines) + f"\n\nLoad average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f}. "
            f"Machine: {_machine(data)}.\n")


def bulk_table(data: dict[str, Any]) -> str:
    """Bulk generation: pvlens vs HF at each batch size and vs the matmul rate."""
    hf = data["hf_reply_tok_per_cpu_s"]
    dtype = data.get("dtype", "float32")
    slots = data.get("pvlens_batch")
    computed = data.get("prompt_tokens_computed")
    early = f"; {data['ended_early']} replies ended before the cap" if "ended_early" in data else ""
    lines = ["| measurement | value |", "|---|---|",
             f"| workload | {data['n_prompts']} chat prompts ({data['prompt_tokens']} prompt tokens), "
             f"≤ {data['max_new_tokens']} new tokens, {data['reply_tokens']} reply tokens (pvlens{early}), "
             f"greedy, {dtype} |",
             *([f"| interleaved rounds (medians below) | {data['repeats']} |"] if "repeats" in data else []),
             *_warmup_row(data),
             *_allocator_row(data),
             f"| pvlens `bulk_generate` ({'auto batch size' if data.get('pvlens_batch_auto', True) else 'batch size set'}"
             f"{f': {slots} slots' if slots else ''}), "
             f"reply tokens per CPU-s | {data['pvlens_reply_tok_per_cpu_s']:.1f} |"]
    if computed is not None:
        lines.append(f"| prompt tokens pvlens computed (shared prefixes once) | {computed} of {data['prompt_tokens']} |")
    lines += [f"| HF `generate`, batch {b}, reply tokens per CPU-s | {v:.1f} |" for b, v in hf.items()]
    rounds = data.get("vs_hf_rounds")
    each = f"; rounds: {', '.join(f'{v:.2f}' for v in rounds)}" if rounds else ""
    lines += [f"| pvlens ÷ HF at HF's best batch ({data['hf_best_batch']}) | {data['vs_hf']:.2f}{each} (target 1.5) |",
              *_drift_rows(data),
              *_reference_row(data),
              _peak_row(data),
              *_bulk_bounds(data),
              f"| load average (1 min) before / after | {data['load_average_1min'][0]:.1f} / "
              f"{data['load_average_1min'][1]:.1f} |",
              f"| machine | {_machine(data)} |"]
    return "\n".join(lines) + "\n"


def _warmup_row(data: dict[str, Any]) -> list[str]:
    """The untimed first call of each side beside its timed median (files from before the
    full-size warm-up: no row)."""
    warm = data.get("warmup_cpu_s")
    if warm is None:
        return []
    pv_median = data["reply_tokens"] / data["pvlens_reply_tok_per_cpu_s"]
    return [f"| first call of each side in the process, before the rounds and not in them (pvlens ran first, "
            f"on fresh memory; HF then reuses what pvlens freed), CPU-s | pvlens {warm['pvlens']:.1f} "
            f"(its rounds' median {pv_median:.1f}); HF batch {warm['hf_batch']} {warm['hf']:.1f} |"]


def _allocator_row(data: dict[str, Any]) -> list[str]:
    """Whether glibc kept freed memory for reuse in the run (process-wide, so both sides), as
    pvlens's command line sets it (files from before it was recorded: no row)."""
    kept = data.get("keep_freed_memory")
    if kept is None:
        return []
    how = ("yes, as pvlens's command line sets it (`keep_freed_memory`)" if kept
           else "no: glibc's defaults (`PVLENS_KEEP_FREED_MEMORY=0`, or not glibc)")
    return [f"| glibc keeps freed memory for reuse (process-wide: both sides) | {how} |"]


def _bulk_bounds(data: dict[str, Any]) -> list[str]:
    """Two rows derived from the run's own numbers: HF's share of the matmul rate, and the
    most pvlens ÷ HF could be if pvlens ran every FLOP it did at that rate."""
    computed = data.get("prompt_tokens_computed")
    if computed is None:
        return []
    r, rate_pv = data["reply_tokens"], data["pvlens_reply_tok_per_cpu_s"]
    flop_per_token = data["pvlens_gflops"] * 1e9 * (r / rate_pv) / (computed + r)
    hf_rate = {str(b): v for b, v in data["hf_reply_tok_per_cpu_s"].items()}[str(data["hf_best_batch"])]
    hf_gflops = hf_rate * (data["prompt_tokens"] + r) / r * flop_per_token / 1e9
    best_pv_rate = data["matmul_gflops"] * 1e9 / flop_per_token * r / (computed + r)
    return [f"| HF achieved GFLOP/s ÷ matmul GFLOP/s (its best batch, every prompt token; medians) | "
            f"{hf_gflops:.1f} ÷ {data['matmul_gflops']:.1f} = {hf_gflops / data['matmul_gflops']:.2f} |",
            f"| ceiling of pvlens ÷ HF: pvlens's work at the full matmul rate | "
            f"{best_pv_rate / hf_rate:.2f} |"]


def _drift_rows(data: dict[str, Any]) -> list[str]:
    """The same ratio with each side's rate divided by the matmul probe read around it, and how
    far the probe moved during the run (files from before the probes: no rows)."""
    if "vs_hf_drift_adjusted" not in data:
        return []
    each = ", ".join(f"{v:.2f}" for v in data["vs_hf_drift_adjusted_rounds"])
    readings = [g for x in data["rounds"] for g in
                [*x["probe_gflops"]["pvlens"], *(v for pair in x["probe_gflops"]["hf"].values() for v in pair)]]
    return [f"| the same, drift adjusted: each side's rate ÷ the matmul probe's rate read just before and "
            f"after it (a check on the row above, not the RESULT) | {data['vs_hf_drift_adjusted']:.2f}; rounds: {each} |",
            f"| matmul probe readings around the sides, slowest – fastest | "
            f"{min(readings):.1f} – {max(readings):.1f} GFLOP/s |"]


def _reference_row(data: dict[str, Any]) -> list[str]:
    """How the matmul reference was timed (files from before it was recorded: no row)."""
    if "matmul_rows" not in data:
        return []
    layouts = sorted({x.get("matmul_layout", "?") for x in data.get("rounds", [])})
    tried = data.get("matmul_layouts", ["x @ W", "F.linear"])  # older files timed these two
    which = "faster" if len(tried) == 2 else "fastest"
    return [f"| matmul reference: the model's weight shapes on {data['matmul_rows']} rows, {which} of "
            f"{' / '.join(f'`{x}`' for x in tried)} ({which} here: {', '.join(f'`{x}`' for x in layouts)}) | "
            f"{data['matmul_gflops']:.1f} GFLOP/s |"]


def _peak_row(data: dict[str, Any]) -> str:
    """pvlens's share of the matmul rate: the RESULT value, and the medians it comes from (with
    rounds, the RESULT is the median of the rounds' own ratios, which can differ a little)."""
    pv, mm = data["pvlens_gflops"], data["matmul_gflops"]
    if "peak_fraction_rounds" in data:
        return (f"| pvlens achieved GFLOP/s ÷ matmul GFLOP/s of the model's shapes (median of the rounds' "
                f"ratios) | {data['peak_fraction']:.2f} (target 0.6; medians {pv:.1f} ÷ {mm:.1f} = {pv / mm:.2f}) |")
    return (f"| pvlens achieved GFLOP/s ÷ matmul GFLOP/s of the model's shapes | "
            f"{pv:.1f} ÷ {mm:.1f} = {data['peak_fraction']:.2f} (target 0.6) |")
