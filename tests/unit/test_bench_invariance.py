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
    data = {"n_prompts": 2, "prompt_tokens": 100, "prompt_tokens_computed": 50, "max_new_tokens": 64,
            "reply_tokens": 100, "pvlens_reply_tok_per_cpu_s": 10.0, "pvlens_gflops": 15.0,
            "matmul_gflops": 20.0, "hf_reply_tok_per_cpu_s": {"32": 4.0, "64": 5.0}, "hf_best_batch": 64,
            "peak_fraction": 0.75, "vs_hf": 2.0, "load_average_1min": [0.5, 0.6]}
    table = benchmark_table(data)
    assert "| HF achieved GFLOP/s ÷ matmul GFLOP/s (its best batch, every prompt token; medians) | 10.0 ÷ 20.0 = 0.50 |" in table
    assert "| ceiling of pvlens ÷ HF: pvlens's work at the full matmul rate | 2.67 |" in table
    assert "| prompt tokens pvlens computed (shared prefixes once) | 50 of 100 |" in table


def test_bulk_table_says_how_the_matmul_reference_was_timed():
    data = {"n_prompts": 2, "prompt_tokens": 100, "max_new_tokens": 64, "reply_tokens": 100,
            "pvlens_reply_tok_per_cpu_s": 10.0, "pvlens_gflops": 15.0, "matmul_gflops": 20.0,
            "matmul_rows": 96, "rounds": [{"matmul_layout": "F.linear"}, {"matmul_layout": "x @ W"}],
            "hf_reply_tok_per_cpu_s": {"64": 5.0}, "hf_best_batch": 64, "peak_fraction": 0.75,
            "vs_hf": 2.0, "load_average_1min": [0.5, 0.6]}
    row = ("| matmul reference: the model's weight shapes on 96 rows, faster of `x @ W` / `F.linear` "
           "(faster here: `F.linear`, `x @ W`) | 20.0 GFLOP/s |")
    assert row in benchmark_table(data)
    del data["matmul_rows"]  # a file from before the reference was recorded: no row, no guess
    assert "matmul reference" not in benchmark_table(data)


def test_matmul_rate_keeps_the_faster_layout(benchmark_script, tiny):
    m = benchmark_script("bench_bulk")
    rate, layout = m.matmul_rate(tiny, rows=4, repeats=1)
    assert rate > 0 and layout in ("x @ W", "F.linear")
