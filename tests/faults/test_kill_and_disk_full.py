"""Fault injection, part 2: a screening run killed at several points (SIGKILL-like: no cleanup,
a half-written line, a stale lock) or hitting a full disk resumes to exactly the result of an
uninterrupted run — nothing lost, nothing duplicated."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest
import torch

import pvlens
from pvlens.io import jsonl
from pvlens.trainsets.screen import ScreenConfig, screen

N_SAMPLES = 12
CFG = dict(layer=1, chunk_size=3, max_new_tokens=6, max_batch=4, gen_batch_size=4, dtype="float32")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small dataset, a random direction saved as vectors, and an uninterrupted reference run."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "data.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"},
                          {"role": "assistant", "content": "It is " + "many " * (i % 4 + 1)}]}
            for i in range(N_SAMPLES)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = pvlens.tiny_model()
    g = torch.Generator().manual_seed(3)
    vectors = root / "v.safetensors"
    pvlens.PersonaVectors({"response_avg": torch.randn(model.cfg.n_layers, model.cfg.d_model,
                                                       generator=g)}, {"trait": "x"}).save(vectors)
    ref_dir = root / "ref"
    screen(model, data, vectors, ref_dir, ScreenConfig(**CFG), cache_dir=root / "ref_cache", progress=False)
    return root, data, vectors, _results(ref_dir)


def _results(folder) -> dict[int, float]:
    rows = jsonl.read_jsonl_lenient(folder / "results.jsonl")
    indices = [r["index"] for r in rows]
    assert len(indices) == len(set(indices)), "a sample was written twice"
    return {r["index"]: r["delta"] for r in rows}


KILLER = textwrap.dedent("""
    import os, sys, json
    import pvlens
    from pvlens.io import jsonl
    from pvlens.trainsets.screen import ScreenConfig, screen
    data, vectors, out, cache, kill_at = sys.argv[1:6]
    kill_at, calls = int(kill_at), [0]
    real_append = jsonl.AppendLog.append
    def dying_append(self, rows):
        calls[0] += 1
        if calls[0] == kill_at:  # half a line on disk, then die without any cleanup
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(rows if not isinstance(rows, list) else rows[0])[:15])
            os._exit(137)
        return real_append(self, rows)
    jsonl.AppendLog.append = dying_append
    cfg = ScreenConfig(**json.loads(sys.argv[6]))
    screen(pvlens.tiny_model(), data, vectors, out, cfg, cache_dir=cache, progress=False)
""")


@pytest.mark.parametrize("kill_at", [1, 2, 4])
def test_killed_run_resumes_to_the_uninterrupted_result(setup, tmp_path, kill_at):
    root, data, vectors, reference = setup
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(data), str(vectors), str(out), str(cache), str(kill_at),
         json.dumps(CFG)],
        capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert (out / ".pvlens.lock").exists(), "a SIGKILL-like death leaves its lock behind"
    screen(pvlens.tiny_model(), data, vectors, out, ScreenConfig(**CFG), cache_dir=cache, progress=False)
    got = _results(out)
    assert got.keys() == reference.keys()
    for i, delta in reference.items():
        assert got[i] == pytest.approx(delta, abs=1e-5), i


def test_disk_full_mid_run_loses_nothing_and_resumes(setup, tmp_path, monkeypatch):
    root, data, vectors, reference = setup
    out, cache = tmp_path / "out", tmp_path / "cache"
    real_append = jsonl.AppendLog.append
    calls = [0]

    def full_disk(self, rows):
        calls[0] += 1
        if calls[0] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(self, rows)

    model = pvlens.tiny_model()
    monkeypatch.setattr(jsonl.AppendLog, "append", full_disk)
    with pytest.raises(OSError, match="No space left"):
        screen(model, data, vectors, out, ScreenConfig(**CFG), cache_dir=cache, progress=False)
    monkeypatch.setattr(jsonl.AppendLog, "append", real_append)
    partial = _results(out)
    assert 0 < len(partial) < N_SAMPLES, "the run stopped part-way with its earlier chunks kept"
    screen(model, data, vectors, out, ScreenConfig(**CFG), cache_dir=cache, progress=False)
    got = _results(out)
    assert got.keys() == reference.keys()
    for i, delta in reference.items():
        assert got[i] == pytest.approx(delta, abs=1e-5), i


def test_a_changed_input_after_a_kill_is_refused_not_mixed(setup, tmp_path):
    from pvlens.io.runs import StaleRunError

    root, data, vectors, _ = setup
    out = tmp_path / "out"
    model = pvlens.tiny_model()
    screen(model, data, vectors, out, ScreenConfig(**CFG), cache_dir=tmp_path / "c", progress=False)
    edited = tmp_path / "edited.jsonl"
    lines = data.read_text().splitlines()
    edited.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    with pytest.raises(StaleRunError, match="data"):
        screen(model, edited, vectors, out, ScreenConfig(**CFG), cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(StaleRunError, match="max_new_tokens"):
        screen(model, data, vectors, out, ScreenConfig(**{**CFG, "max_new_tokens": 7}),
               cache_dir=tmp_path / "c", progress=False)
