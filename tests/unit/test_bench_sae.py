"""bench_sae's results file: its RESULT lines in the shape the docs' `bench` renderer reads."""

from __future__ import annotations

import argparse
import json

from pvlens.io.doctables import renderers


def test_results_file_renders_every_result_line_with_its_load(benchmark_script, tmp_path):
    bench = benchmark_script("bench_sae")
    out = tmp_path / "results.json"
    args = argparse.Namespace(n_prompts=4, threads=1, out=out)
    lines = ["RESULT sae_activations tokens_per_s=495 hf_tokens_per_s=517 ratio=0.96",
             "RESULT sae_step tokens_per_s=2053 d_sae=4608 batch=2048"]
    bench.write_results(args, lines, load0=0.26, seconds=12.3, n_tokens=99)
    doc = json.loads(out.read_text())
    script = doc["results"]["scripts"]["bench_sae"]
    assert script["args"] == ["--n-prompts", "4", "--threads", "1"] and script["tokens_after_position_0"] == 99
    table = renderers()["bench"](doc)
    assert "| `bench_sae.py` | `sae_activations` | tokens_per_s=495 hf_tokens_per_s=517 ratio=0.96 | 0.3 → " in table
    assert "| `bench_sae.py` | `sae_step` |" in table and "1 thread per script" in table
