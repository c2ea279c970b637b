"""The shared building blocks every pipeline uses: run inputs and locks, atomic writes, the
append-log, fingerprints, configs, old import paths and the CLI's error boundary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from pydantic import ValidationError

from pvlens.core.config import Config, SamplingConfig, default_layer, default_layers
from pvlens.core.fingerprint import file_hash, json_hash, model_fingerprint, tensor_hash
from pvlens.errors import PvlensError
from pvlens.io.atomic import read_json_checked, write_json_atomic
from pvlens.io.jsonl import AppendLog, KeyedTextStore, repair_tail
from pvlens.io.runs import (
    INPUTS_FILE,
    RunLockedError,
    StaleRunError,
    changed_inputs,
    check_inputs,
    run_lock,
)


def test_check_inputs_resumes_same_and_refuses_changed(tmp_path):
    inputs = {"seed": 0, "model": "abc", "config": {"samples": 3, "layers": [1, 2]}}
    assert check_inputs(tmp_path, inputs) is False  # a new run
    (tmp_path / "results.jsonl").write_text("{}\n")
    assert check_inputs(tmp_path, inputs) is True  # same inputs: resume
    changed = {**inputs, "config": {"samples": 4, "layers": [1, 2]}}
    with pytest.raises(StaleRunError, match=r"config\.samples: 3 → 4") as e:
        check_inputs(tmp_path, changed)
    assert "--overwrite" in str(e.value) and isinstance(e.value, PvlensError)
    assert (tmp_path / "results.jsonl").exists(), "a refused rerun must not delete anything"
    assert check_inputs(tmp_path, changed, overwrite=True) is False
    assert not (tmp_path / "results.jsonl").exists()
    assert json.loads((tmp_path / INPUTS_FILE).read_text())["config"]["samples"] == 4


def test_check_inputs_compares_values_as_json(tmp_path):
    from pathlib import Path

    check_inputs(tmp_path, {"layers": (1, 2), "data": Path("a/b.jsonl")})
    assert check_inputs(tmp_path, {"layers": [1, 2], "data": "a/b.jsonl"}) is True


def test_changed_inputs_names_added_removed_and_nested():
    old = {"a": 1, "b": {"c": 2, "d": 3}}
    new = {"a": 1, "b": {"c": 5}, "e": 0}
    assert changed_inputs(old, new) == ["b.c", "b.d", "e"]


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    lock = tmp_path / ".pvlens.lock"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(str(child.pid))
        with pytest.raises(RunLockedError, match=str(child.pid)), run_lock(tmp_path):
            pass
    finally:
        child.kill()
        child.wait()
    with run_lock(tmp_path):  # the holder is dead now: taken over
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_atomic_write_and_checked_read(tmp_path):
    path = tmp_path / "meta.json"
    write_json_atomic(path, {"x": 1})
    assert read_json_checked(path) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"], "no temporary files left"
    path.write_text("")  # what a kill mid-write leaves with a non-atomic writer
    with pytest.raises(ValueError, match="meta.json is empty or cut off"):
        read_json_checked(path)


def test_append_log_repairs_a_cut_tail_before_appending(tmp_path):
    log = AppendLog(tmp_path / "log.jsonl")
    log.append([{"i": 0}, {"i": 1}])
    with log.path.open("a") as f:
        f.write('{"i": 2, "cut')  # a kill mid-write
    assert [r["i"] for r in log.read()] == [0, 1]
    log.append({"i": 3})
    assert [r["i"] for r in log.read()] == [0, 1, 3]
    assert repair_tail(log.path) == 0
    assert log.path.read_text().count("\n") == 3


def test_keyed_text_store_survives_a_cut_line(tmp_path):
    store = KeyedTextStore(tmp_path / "cache.jsonl", "reply")
    store.add(["a", "b"], ["A", "B"])
    with store.path.open("a") as f:
        f.write('{"key": "c", "rep')
    again = KeyedTextStore(tmp_path / "cache.jsonl", "reply")
    assert again.get(["a", "b"]) == ["A", "B"] and "c" not in again
    again.add(["c"], ["C"])
    assert KeyedTextStore(tmp_path / "cache.jsonl", "reply").get(["c"]) == ["C"]


def test_model_fingerprint_sees_a_lora_on_q_and_v_only(tiny):
    from pvlens.finetune.lora import LoraConfig, add_lora

    before = model_fingerprint(tiny)
    assert model_fingerprint(tiny) == before  # memoised, stable
    handle = add_lora(tiny, LoraConfig(r=2, alpha=4, targets=("q", "v")))
    try:
        with torch.no_grad():  # a trained adapter: B is no longer zero
            for p in handle.parameters():
                p.add_(0.01)
        assert model_fingerprint(tiny) != before
    finally:
        handle.remove()
    assert model_fingerprint(tiny) == before


def test_model_fingerprint_changes_with_any_weight(tiny):
    before = model_fingerprint(tiny)
    w = tiny.blocks[0].attn._W_V  # a Parameter (W_V is computed from it under GQA)
    with torch.no_grad():
        w[0, 0, 0] += 1e-3
    try:
        assert model_fingerprint(tiny) != before
    finally:
        with torch.no_grad():
            w[0, 0, 0] -= 1e-3


def test_content_hashes(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("x")
    h = file_hash(p)
    p.write_text("y")
    assert file_hash(p) != h
    assert json_hash({"a": 1, "b": 2}) == json_hash({"b": 2, "a": 1})
    t = torch.arange(4.0)
    assert tensor_hash(t) == tensor_hash(t.clone()) != tensor_hash(t + 1)
    assert tensor_hash(t) != tensor_hash(t.double())


def test_config_forbids_unknown_fields_and_documents_fields():
    with pytest.raises(ValidationError, match="extra"):
        SamplingConfig(max_new_token=5)
    s = SamplingConfig()
    assert SamplingConfig.model_fields["top_p"].description  # docstring became the field doc
    with pytest.raises(ValidationError):
        s.changed(seeds=3)
    assert s.changed(seed=3).seed == 3
    assert issubclass(SamplingConfig, Config)


def test_default_layers_follow_the_model():
    assert default_layer(30) == 15
    assert default_layers(30) == [12, 15, 18]
    assert default_layer(2) == 1 and default_layers(2) == [0, 1]


def test_old_module_paths_are_the_new_modules():
    import pvlens.core.steering

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import pvlens.steering as old
    assert old is pvlens.core.steering
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    from pvlens.screen import screen  # noqa: F401 — a name from the old flat layout


def test_cli_error_boundary_prints_one_line_and_exits_2(tmp_path):
    cmd = [sys.executable, "-c", "from pvlens.cli import main; main()",
           "compare", str(tmp_path / "missing-a"), str(tmp_path / "missing-b")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in out.stderr
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr or "FileNotFoundError" in debug.stderr
