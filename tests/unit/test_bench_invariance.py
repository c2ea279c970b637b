"""benchmarks/bench_invariance.py's comparison and its docs table (the script itself needs the
default model and runs as a benchmark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pvlens.io.benchtables import benchmark_table

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_invariance.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_invariance", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_first_difference_and_pairs():
    m = _module()
    assert m.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert m.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert m.first_difference([1, 2], [1, 2, 3]) == 2  # one reply stopped earlier
    pairs = m.compare({"a": [[1, 2], [3, 4]], "b": [[1, 2], [3, 5]], "c": [[9], [3, 4]]})
    assert [(p["a"], p["b"], p["identical"], p["first_difference_at"]) for p in pairs] == [
        ("a", "b", 1, [1]), ("a", "c", 1, [0]), ("b", "c", 0, [0, 1])]
    table = benchmark_table({"sampled": pairs, "greedy": pairs[:1]})
    assert "| sampled | b | c | 0 / 2 | 0, 1 |" in table and "| greedy | a | b | 1 / 2 | 1 |" in table
