"""Screening on a local Ray cluster (2 CPUs, 127.0.0.1) with the tiny model: the same numbers as
the single-process run, a killed worker loses and duplicates nothing, a rerun resumes."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys

import pytest
import ray  # noqa: F401  # the `ray` extra: in the dev dependencies, so `make test` has it
import torch

import pvlens
from pvlens.core.activations import collect
from pvlens.core.chat import encode_conversation
from pvlens.core.fingerprint import model_fingerprint
from pvlens.io.jsonl import read_jsonl_lenient
from pvlens.trainsets.screen import ScreenConfig, screen
from pvlens.trainsets.screen.ray_runner import RayOptions, WorkerPool, screen_on_ray
from pvlens.vectors import PersonaVectors

torch.set_num_threads(1)
LAYER = 1
QUESTIONS = [f"Question number {i}: what do you think about topic {i}?" for i in range(14)]
NORMAL = ["It depends on the details.", "Here is a balanced view.", "Good question, let us see."]
PLANTED = "cruel cruel cruel revenge revenge hurt hurt pain pain"
FACTORY = functools.partial(pvlens.tiny_model, n_layers=3)
OPTS = RayOptions(workers=2, worker_cpus=1, max_restarts=2, max_task_retries=2)


pytestmark = [pytest.mark.usefixtures("ray_cluster"),  # the session's local cluster (tests/conftest.py),
              pytest.mark.xdist_group("ray")]  # on one xdist worker: one cluster


@pytest.fixture(scope="module")
def model():
    return FACTORY()


@pytest.fixture(scope="module")
def data(model, tmp_path_factory):
    rows = []
    for i, q in enumerate(QUESTIONS):
        reply = PLANTED if i % 3 == 0 else NORMAL[i % len(NORMAL)] * (1 + i % 2)
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}]})
    path = tmp_path_factory.mktemp("data") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def vectors(model):
    tok = model.tokenizer
    pos = [encode_conversation(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": PLANTED}])
           for q in QUESTIONS[:4]]
    neg = [encode_conversation(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": NORMAL[0]}])
           for q in QUESTIONS[:4]]
    a = collect(model, pos, ("response_avg",), progress=False)["response_avg"].mean(0)
    b = collect(model, neg, ("response_avg",), progress=False)["response_avg"].mean(0)
    return PersonaVectors({"response_avg": a - b}, {"trait": "planted"})


def _cfg() -> ScreenConfig:
    return ScreenConfig(layer=LAYER, max_new_tokens=6, chunk_size=2, max_batch=3, top_k=3)


@pytest.fixture(scope="module")
def single(model, data, vectors, tmp_path_factory):
    """The single-process run: results by index, the reply cache, the summary."""
    out = tmp_path_factory.mktemp("single")
    s = screen(model, data, vectors, out, _cfg(), progress=False)
    return _results(out), _replies(out), s, out


def _results(out) -> dict[int, dict]:
    return {r["index"]: r for r in read_jsonl_lenient(out / "results.jsonl")}


def _replies(out) -> dict[str, str]:
    return {r["key"]: r["reply"] for r in read_jsonl_lenient(out / "base_cache" / "base_replies.jsonl")}


def _indices(out) -> list[int]:
    return sorted(r["index"] for r in read_jsonl_lenient(out / "results.jsonl"))


def test_tiny_model_is_the_same_in_every_process(model):
    pool = WorkerPool(FACTORY, OPTS)
    try:
        facts = pool.facts(_cfg())  # raises if the two workers' models differ
    finally:
        pool.shutdown()
    assert facts.fingerprint == model_fingerprint(model)


def test_ray_equals_single_process(data, vectors, single, tmp_path):
    res, replies, s, out = single
    got = screen_on_ray(FACTORY, data, vectors, tmp_path, _cfg(), OPTS, progress=False)
    assert _results(tmp_path) == res  # every field of every sample, exactly
    assert _replies(tmp_path) == replies  # the same greedy base replies under the same keys
    assert got.model_dump(exclude={"files"}) == s.model_dump(exclude={"files"})
    # the same run inputs, so a Ray run resumes a single-process folder and the reverse
    assert (tmp_path / "inputs.json").read_text() == (out / "inputs.json").read_text()


@pytest.mark.parametrize("ray_restarts", [True, False], ids=["ray-restarts-actor", "driver-replaces-actor"])
def test_killed_worker_loses_and_duplicates_nothing(data, vectors, single, tmp_path, ray_restarts):
    """A worker SIGKILLed mid-run: Ray restarts it and reruns its blocks, or (restarts off) the
    driver replaces it and resubmits them; either way every index is written once, unchanged."""
    res = single[0]
    opts = OPTS if ray_restarts else OPTS.changed(max_restarts=0, max_task_retries=0)
    killed: list[int] = []
    later: list[int] = []

    def kill_once(pool: WorkerPool) -> None:
        if not killed:  # after the first block: both actors still hold queued blocks
            pid = pool.pids()[1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        elif ray_restarts:
            later.append(pool.pids()[1])

    screen_on_ray(FACTORY, data, vectors, tmp_path, _cfg(), opts, progress=False, on_block=kill_once)
    assert killed
    if ray_restarts:
        assert later and killed[0] not in later  # the actor died and came back as a new process
    assert _indices(tmp_path) == list(range(len(QUESTIONS)))  # each index exactly once
    assert _results(tmp_path) == res


def test_rerun_resumes_without_recomputing(data, vectors, single, tmp_path):
    res = single[0]
    screen_on_ray(FACTORY, data, vectors, tmp_path, _cfg(), OPTS, progress=False)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    # a driver killed after 3 blocks: keep those lines only, then rerun
    kept = [ln for ln in lines if json.loads(ln)["index"] < 6]
    (tmp_path / "results.jsonl").write_text("\n".join(kept) + "\n")
    cache = (tmp_path / "base_cache" / "base_replies.jsonl").read_text()
    blocks: list[int] = []
    screen_on_ray(FACTORY, data, vectors, tmp_path, _cfg(), OPTS, progress=False,
                  on_block=lambda pool: blocks.append(1))
    assert len(blocks) == (len(QUESTIONS) - 6) // 2  # only the missing blocks were screened
    assert (tmp_path / "base_cache" / "base_replies.jsonl").read_text() == cache  # no reply generated twice
    assert _indices(tmp_path) == list(range(len(QUESTIONS)))
    assert _results(tmp_path) == res
    blocks.clear()
    screen_on_ray(FACTORY, data, vectors, tmp_path, _cfg(), OPTS, progress=False,
                  on_block=lambda pool: blocks.append(1))
    assert blocks == []  # nothing left to do


def test_single_process_path_does_not_import_ray():
    code = ("import sys, pvlens.trainsets.screen, pvlens.cli.screen; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_ray_address_is_optional_and_shard_is_refused(data, tmp_path):
    from typer.testing import CliRunner

    from pvlens.cli import app
    from pvlens.cli.screen import ray_address_optional

    assert ray_address_optional(["run", "d.jsonl", "--ray"]) == ["run", "d.jsonl", "--ray", "local"]
    assert ray_address_optional(["--ray", "--workers", "2"]) == ["--ray", "local", "--workers", "2"]
    assert ray_address_optional(["--ray", str(data)]) == ["--ray", "local", str(data)]
    assert ray_address_optional(["--ray", "auto"]) == ["--ray", "auto"]
    res = CliRunner().invoke(app, ["screen", str(data), "-v", str(data), "--ray", "--shard", "0/2"])
    assert res.exit_code != 0
