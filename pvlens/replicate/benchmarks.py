"""Speed benchmarks: the scripts in benchmarks/ run as subprocesses (one thread), their
`RESULT name key=value ...` lines collected into JSON. Speeds depend on the machine and its load:
the results record the CPU, the thread count and the load average around each script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pvlens.core.machine import describe, machine_facts
from pvlens.errors import PvlensError
from pvlens.replicate.registry import Context
from pvlens.replicate.tables import md_table

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
PVLENS_SRC = Path(__file__).resolve().parents[1]
"""pvlens's sources: the code the benchmarks time (part of their inputs)."""
FULL: dict[str, list[str]] = {
    "bench_generate": ["--threads", "1"],
    "bench_activations": ["--threads", "1"],
    "bench_screen": [],
    "bench_finetune": ["--threads", "1"],
    "bench_extract": [],
}
QUICK: dict[str, list[str]] = {"bench_generate": ["--threads", "1", "--repeats", "1", "--batch-sizes", "1", "--new-tokens", "4"]}
RAY_FULL: dict[str, list[str]] = {"bench_ray": []}
RAY_QUICK: dict[str, list[str]] = {"bench_ray": ["--n", "2", "--rounds", "1", "--block", "1", "--max-new-tokens", "4",
                                                "--gen-n", "2", "--gen-block", "1"]}
RESULT = re.compile(r"^RESULT (\S+)(.*)$", re.M)


def parse_results(stdout: str) -> dict[str, dict[str, Any]]:
    """`RESULT name k=v k=v (free text)` lines → {name: {k: float or str}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, rest in RESULT.findall(stdout):
        fields: dict[str, Any] = {}
        for key, val in re.findall(r"(\w+)=(\S+)", rest):
            try:
                fields[key] = float(val)
            except ValueError:
                fields[key] = val
        out[name] = fields
    return out


def run_script(name: str, args: list[str], folder: Path) -> dict[str, Any]:
    """Run benchmarks/<name>.py; its stdout goes to <folder>/<name>.log; RESULT lines parsed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    load0, t0 = os.getloadavg()[0], time.time()
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr[-4000:])
    if proc.returncode != 0:
        raise PvlensError(f"benchmarks/{name}.py failed (exit {proc.returncode}); see {folder / f'{name}.log'}")
    return {"args": args, "seconds": round(time.time() - t0, 1), "load_before": load0,
            "load_after": os.getloadavg()[0], "results": parse_results(proc.stdout)}


def _inputs(ctx: Context, plan: dict[str, list[str]]) -> dict[str, Any]:
    from pvlens.core.fingerprint import file_hash, source_hash

    return {"scripts": {n: {"args": a, "hash": file_hash(BENCH / f"{n}.py")} for n, a in plan.items()},
            **machine_facts(),  # a result from another CPU (or its flags, or torch) is another benchmark
            # the timings measure pvlens's code: a changed pvlens is another benchmark
            "pvlens_code": source_hash(PVLENS_SRC)}


def _run(plan: dict[str, list[str]], folder: Path) -> dict[str, Any]:
    return {**machine_facts(), "threads": 1,
            "scripts": {n: run_script(n, a, folder / "logs") for n, a in plan.items()}}


def inputs(ctx: Context) -> dict[str, Any]:
    return _inputs(ctx, QUICK if ctx.quick else FULL)


def run(ctx: Context, folder: Path) -> dict[str, Any]:
    return _run(QUICK if ctx.quick else FULL, folder)


def ray_inputs(ctx: Context) -> dict[str, Any]:
    return _inputs(ctx, RAY_QUICK if ctx.quick else RAY_FULL)


def ray_run(ctx: Context, folder: Path) -> dict[str, Any]:
    return _run(RAY_QUICK if ctx.quick else RAY_FULL, folder)


def _value(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


def bench_table(doc: dict[str, Any]) -> str:
    """docs/benchmarks.md: every RESULT line with the load around its script."""
    r = doc["results"]
    rows = [[f"`{name}.py`", f"`{res}`", _value(fields), f"{s['load_before']:.1f} → {s['load_after']:.1f}", f"{s['seconds']:.0f}"]
            for name, s in r["scripts"].items() for res, fields in s["results"].items()]
    return (md_table(["script", "RESULT", "values", "load average before → after", "script s"], rows)
            + f"\n({describe(r)}; {r['threads']} thread per script.)\n")


def ray_table(doc: dict[str, Any]) -> str:
    """docs/ray.md: samples/s, worker CPU s per sample and cores got, 1 vs 2 workers."""
    s = doc["results"]["scripts"]["bench_ray"]
    rates, cpu = s["results"]["ray_rates"], s["results"]["ray_cpu"]
    rows = [["samples/s (wall)", f"{rates['samples_per_s_1']:.3f}", f"{rates['samples_per_s_2']:.3f}"],
            ["worker CPU s per sample", f"{cpu['cpu_s_per_sample_1']:.2f}", f"{cpu['cpu_s_per_sample_2']:.2f}"],
            ["cores the workers got on average", f"{cpu['cores_1']:.2f}", f"{cpu['cores_2']:.2f}"],
            ["scaling (2 ÷ 1)", "", f"{s['results']['ray_screen_scaling']['ratio']:.2f}"],
            ["1M samples screened (hours)", f"{1e6 / rates['samples_per_s_1'] / 3600:,.0f}",
             f"{1e6 / rates['samples_per_s_2'] / 3600:,.0f}"]]
    gen = s["results"].get("ray_gen_rates")
    if gen:
        rows.append([f"bulk generation, reply tokens/s (greedy, {gen['n']:.0f} chat prompts, mean reply "
                     f"{gen['mean_reply_tokens']:.0f} tokens)", f"{gen['tokens_per_s_1']:.1f}", f"{gen['tokens_per_s_2']:.1f}"])
    return md_table(["", "1 worker", "2 workers"], rows) + \
        f"\n(load average {s['load_before']:.1f} before, {s['load_after']:.1f} after; {describe(doc['results'])})\n"
