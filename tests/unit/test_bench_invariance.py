"""benchmarks/bench_invariance.py's comparison and its docs table (the script itself needs the
default model and runs as a benchmark)."""

from __future__ import annotations

from pvlens.io.benchtables import benchmark_table


def test_first_difference_and_pairs(benchmark_script):
    m = benchmark_script("bench_invariance")
    assert m.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert m.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert m.first_difference([1, 2], [1, 2, 3]) == 2  # one reply stopped earlier
    pairs = m.compare({"a": [[1, 2], [3, 4]], "b": [[1, 2], [3, 5]], "c": [[9], [3, 4]]})
    assert [(p["a"], p["b"], p["identical"], p["first_difference_at"]) for p in pairs] == [
        ("a", "b", 1, [1]), ("a", "c", 1, [0]), ("b", "c", 0, [0, 1])]
    table = benchmark_table({"sampled": pairs, "greedy": pairs[:1]})
    assert "| sampled | b | c | 0 / 2 | 0, 1 |" in table and "| greedy | a | b | 1 / 2 | 1 |" in table


def test_bulk_table_derives_hf_share_and_ceiling():
    """HF's share of the matmul rate and pvlens's ceiling follow from the run's own numbers:
    1 GFLOP per token, 100 reply tokens, 50 prompt tokens computed of 100, pvlens 10 reply tok/s
    (15 GFLOP/s), HF 5 reply tok/s (10 GFLOP/s), matmul 20 GFLOP/s."""
    data = _bulk_results() | {"prompt_tokens_computed": 50, "hf_reply_tok_per_cpu_s": {"32": 4.0, "64": 5.0}}
    table = benchmark_table(data)
    assert "| HF achieved GFLOP/s ÷ matmul GFLOP/s (its best batch, every prompt token; medians) | 10.0 ÷ 20.0 = 0.50 |" in table
    assert "| ceiling of pvlens ÷ HF: pvlens's work at the full matmul rate | 2.67 |" in table
    assert "| prompt tokens pvlens computed (shared prefixes once) | 50 of 100 |" in table


def test_bulk_table_says_how_the_matmul_reference_was_timed():
    data = _bulk_results() | {"matmul_rows": 96,
                              "rounds": [{"matmul_layout": "F.linear"}, {"matmul_layout": "x @ W"}]}
    row = ("| matmul reference: the model's weight shapes on 96 rows, faster of `x @ W` / `F.linear` "
           "(faster here: `F.linear`, `x @ W`) | 20.0 GFLOP/s |")
    assert row in benchmark_table(data)
    del data["matmul_rows"]  # a file from before the reference was recorded: no row, no guess
    assert "matmul reference" not in benchmark_table(data)


def test_matmul_rate_keeps_the_faster_layout(benchmark_script, tiny):
    m = benchmark_script("bench_bulk")
    rate, layout = m.matmul_rate(tiny, rows=4, repeats=1)
    assert rate > 0 and layout in ("x @ W", "F.linear", "MKL packed")


def test_fp32_reference_times_the_engines_mkl_packing(benchmark_script, tiny):
    """Where MKL's packed GEMM runs (the engine's fp32 bulk unembedding), the reference times it
    too, with the same products as plain `F.linear`; never in bf16."""
    import torch

    m = benchmark_script("bench_bulk")
    w = torch.randn(12, 8)
    packed = m.mkl_packing([w], rows=4)
    if not torch._C.has_mkl:
        assert packed is None and "MKL packed" not in m.MatmulProbe(tiny, rows=4).layouts
        return
    x = torch.randn(4, 8)
    p, same = packed[0]
    assert torch.allclose(torch.ops.mkl._mkl_linear(x, p, same, None, 4), x @ w.t(), atol=1e-5)
    assert "MKL packed" in m.MatmulProbe(tiny, rows=4).layouts
    assert "MKL packed" not in m.MatmulProbe(tiny, rows=4, dtype=torch.bfloat16).layouts


def test_drift_adjustment_divides_each_side_by_the_speed_it_met(benchmark_script):
    m = benchmark_script("bench_bulk")
    assert m.drift_adjusted(1.5, [30.0, 30.0], [30.0, 30.0]) == 1.5  # steady machine: unchanged
    # HF ran while the machine was at half speed: its rate was halved by the machine, not its code
    assert m.drift_adjusted(2.0, [30.0, 30.0], [14.0, 16.0]) == 1.0
    assert m.drift_adjusted(1.0, [20.0, 10.0], [30.0, 30.0]) == 2.0  # pvlens met the slow spell


def test_matmul_probe_reads_a_rate_per_layout(benchmark_script, tiny):
    m = benchmark_script("bench_bulk")
    probe = m.MatmulProbe(tiny, rows=4)
    assert probe.rows == 4 and probe.flop > 0
    assert all(probe.rate(name, calls=1) > 0 for name in probe.layouts)
    rate, layout = m.matmul_rate(tiny, rows=4, repeats=1, probe=probe)
    assert rate > 0 and layout in probe.layouts


def _bulk_results() -> dict:
    """The keys every bench_bulk results file has (the oldest ones too)."""
    return {"n_prompts": 2, "prompt_tokens": 100, "max_new_tokens": 64, "reply_tokens": 100,
            "pvlens_reply_tok_per_cpu_s": 10.0, "pvlens_gflops": 15.0, "matmul_gflops": 20.0,
            "hf_reply_tok_per_cpu_s": {"64": 5.0}, "hf_best_batch": 64, "peak_fraction": 0.75,
            "vs_hf": 2.0, "load_average_1min": [0.5, 0.6]}


def test_bulk_table_shows_the_drift_adjusted_ratio_only_when_recorded():
    rounds = [{"probe_gflops": {"pvlens": [20.0, 21.0], "hf": {"64": [12.5, 20.0]}}},
              {"probe_gflops": {"pvlens": [19.0, 20.0], "hf": {"64": [20.0, 22.0]}}}]
    data = _bulk_results() | {"vs_hf_rounds": [2.0, 3.0], "rounds": rounds}
    assert "drift adjusted" not in benchmark_table(data)  # an older file: no row, no guess
    data |= {"vs_hf_drift_adjusted": 1.8, "vs_hf_drift_adjusted_rounds": [1.59, 2.0]}
    table = benchmark_table(data)
    assert "(a check on the row above, not the RESULT) | 1.80; rounds: 1.59, 2.00 |" in table
    assert "| matmul probe readings around the sides, slowest – fastest | 12.5 – 22.0 GFLOP/s |" in table


def test_bulk_table_shows_each_sides_untimed_first_call_and_pvlens_median():
    data = _bulk_results()
    assert "first call of each side" not in benchmark_table(data)  # an older file: no row
    data["warmup_cpu_s"] = {"pvlens": 13.25, "hf": 21.0, "hf_batch": 64}
    row = next(r for r in benchmark_table(data).splitlines() if "first call of each side" in r)
    # 100 reply tokens at the median 10 tok/s: 10 CPU-s timed, against 13.2 for the first call
    assert row.endswith("| pvlens 13.2 (its rounds' median 10.0); HF batch 64 21.0 |")


def test_bulk_table_says_whether_glibc_kept_freed_memory_only_when_recorded():
    data = _bulk_results()
    assert "keeps freed memory" not in benchmark_table(data)  # an older file: no row
    data["keep_freed_memory"] = True
    assert "| glibc keeps freed memory for reuse (process-wide: both sides) | yes, as" in benchmark_table(data)
    data["keep_freed_memory"] = False
    assert "| glibc keeps freed memory for reuse (process-wide: both sides) | no: glibc's defaults" in benchmark_table(data)
