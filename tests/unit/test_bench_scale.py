"""benchmarks/bench_scale.py at a tiny size, so the real-size benchmark cannot rot."""

from __future__ import annotations

import math

import torch

from pvlens.io.benchtables import benchmark_table

torch.set_num_threads(1)


def test_tiny_run_measures_every_quantity_and_renders(benchmark_script):
    bench = benchmark_script("bench_scale")
    res = bench.run(["tiny"], new_tokens=(2, 2, 1), batches=(1, 4, 8), act_prompts=4, stream_sizes=(8, 32))
    row = res["models"]["tiny"]
    assert row["params"] > 1e6
    rates = [g[k] for g in row["generation"].values() for k in ("pvlens_tok_s", "hf_tok_s")]
    rates += list(row["activations"].values()) + list(row["lora"].values())
    assert len(rates) == 10 and all(math.isfinite(x) and x > 0 for x in rates)
    # generation is timed warm (engine packing apart, timed once) and repeated
    assert all(g["repeats"] == 3 for g in row["generation"].values())
    assert math.isfinite(row["engine_pack_s"]) and row["engine_pack_s"] >= 0
    assert set(row["stream_extra_mb"]) == set(row["stream_result_mb"]) == {"8", "32"}
    assert row["stream_result_mb"]["32"] == 4 * row["stream_result_mb"]["8"] > 0
    # streaming: 4x the conversations must not need memory in proportion (tiny model: a few MB)
    assert row["stream_extra_mb"]["32"] < row["stream_extra_mb"]["8"] + 64
    # the live heap (glibc here) holds the result and a bounded working set, not more per conversation
    heap = {n: row["stream_heap_mb"][n] - row["stream_result_mb"][n] for n in ("8", "32")}
    assert all(math.isfinite(v) for v in heap.values())
    assert heap["32"] < heap["8"] + 8
    assert row["peak_mb"] > 0
    table = benchmark_table(res)
    assert "| generation, batch 8 (new tokens per CPU-s; warmed up, median)" in table
    assert "| pvlens fast-engine weight packing, once per model (CPU-s)" in table
    assert "tiny" in table and "of result)" in table
    assert "extra peak live heap MB" in table and "heap left allocated" in table
    assert set(row["stream_heap_retained_mb"]) == {"8", "32"}


def test_real_configs_are_the_published_shapes(benchmark_script):
    cfgs = benchmark_script("bench_scale").CONFIGS
    assert cfgs["qwen2.5-0.5b"]["hidden_size"] == 896 and cfgs["qwen2.5-0.5b"]["num_hidden_layers"] == 24
    assert cfgs["qwen2.5-1.5b"]["intermediate_size"] == 8960
    assert cfgs["llama3.1-8b"]["rope_scaling"]["rope_type"] == "llama3"
