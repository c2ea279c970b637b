"""Bulk generation on a local Ray cluster (2 CPUs, 127.0.0.1) with the tiny model: the same
replies as one process (greedy, seeded sampling, steered), a killed worker's block rerun with
nothing lost or duplicated, extraction rollouts and `pvlens datasets build --ray` unchanged."""

from __future__ import annotations

import functools
import json
import os
import signal

import pytest
import ray  # noqa: F401  # the `ray` extra: in the dev dependencies, so `make test` has it
import torch

import pvlens
from pvlens.core.bulk import bulk_generate
from pvlens.core.config import SamplingConfig
from pvlens.core.ray_bulk import RayGenerator, bulk_generate_on_ray
from pvlens.core.ray_pool import ActorPool, RayOptions, RayPoolError
from pvlens.core.steering import Steering
from pvlens.io.jsonl import read_jsonl_lenient
from pvlens.traits import load_trait
from pvlens.vectors.rollouts import generate_rollouts, plan, read_rollouts

torch.set_num_threads(1)
FACTORY = functools.partial(pvlens.tiny_model, n_layers=3)
# half a CPU per actor: the module's pool and a test's own pool fit the 2-CPU cluster together
OPTS = RayOptions(workers=2, worker_cpus=0.5, max_restarts=2, max_task_retries=2)
PROMPTS = [f"Tell me about topic {i}" + " please" * (i % 4) for i in range(11)]
GREEDY = SamplingConfig(max_new_tokens=6, temperature=0.0)
SAMPLED = SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7)
BLOCK = 3
"""Rows per block of the module's generator."""


pytestmark = [pytest.mark.usefixtures("ray_cluster"),  # the session's local cluster (tests/conftest.py),
              pytest.mark.xdist_group("ray")]  # on one xdist worker: one cluster


@pytest.fixture(scope="module")
def model():
    return FACTORY()


@pytest.fixture(scope="module")
def gen():
    with RayGenerator(FACTORY, OPTS, block_size=BLOCK) as g:
        yield g


def test_greedy_equals_single_process(model, gen):
    want = bulk_generate(model, PROMPTS, GREEDY).texts
    assert gen(model, PROMPTS, GREEDY).texts == want  # blocks of 3 on two workers, reassembled in order


def _in_blocks(model, prompts, sampling, block=BLOCK, row_seeds=None, **kw) -> list[str]:
    """One process over the workers' blocks and slots, each row seeded by its global index."""
    seeds = list(range(len(prompts))) if row_seeds is None else list(row_seeds)
    return [t for b in range(0, len(prompts), block)
            for t in bulk_generate(model, prompts[b : b + block], sampling,
                                   row_seeds=seeds[b : b + block], **kw).texts]


def test_seeded_steered_sampling_equals_single_process(model, gen):
    """Sampled replies equal one process's over the same blocks and slots, to the token. Against
    a one-process run with *other* batches only greedy is compared exactly: there the logits
    differ in the last bits, and with this random model's near-uniform next-token distributions
    the top-p sort of near-tied tokens can flip a draw (on an AMD EPYC, row 9 of 11 did)."""
    steer = Steering(torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1)), 1, 4.0)
    seeds = [1000 + 7 * i for i in range(len(PROMPTS))]
    want = _in_blocks(model, PROMPTS, SAMPLED, steer=steer, row_seeds=seeds, batch_size=2)
    got = gen(model, PROMPTS, SAMPLED, steer=steer, row_seeds=seeds, batch_size=2).texts
    assert got == want
    assert want != _in_blocks(model, PROMPTS, GREEDY, steer=steer, batch_size=2)  # sampling did sample
    # the default row seeds are the global row indices, as in one process
    assert gen(model, PROMPTS, SAMPLED).texts == _in_blocks(model, PROMPTS, SAMPLED)
    # one row per slot on both sides: no batch-mates, the same logits, so every draw matches
    # the unsplit one-process run: a row's draws depend on its seed, not on its block or worker
    assert (gen(model, PROMPTS, SAMPLED, batch_size=1).texts
            == bulk_generate(model, PROMPTS, SAMPLED, batch_size=1).texts)


def test_one_shot_function_and_model_check(model):
    got = bulk_generate_on_ray(FACTORY, PROMPTS[:4], GREEDY, ray=OPTS.changed(workers=1), block_size=2)
    assert got.texts == bulk_generate(model, PROMPTS[:4], GREEDY).texts
    with RayGenerator(FACTORY, OPTS.changed(workers=1)) as g, pytest.raises(RayPoolError, match="different model"):
        g(pvlens.tiny_model(n_layers=2), PROMPTS[:2], GREEDY)  # driver and workers must agree


@pytest.mark.parametrize("ray_restarts", [True, False], ids=["ray-restarts-actor", "driver-replaces-actor"])
def test_killed_worker_block_is_rerun_once(model, tmp_path, ray_restarts):
    """A worker SIGKILLed after the first block: its blocks are rerun (by Ray or by the driver);
    rollouts.jsonl then holds every planned rollout once, equal to the single-process file."""
    spec = load_trait("evil")
    todo = plan(spec, 3, 1, 2)  # 12 rollouts
    single = generate_rollouts(model, spec, tmp_path / "single.jsonl", todo, SAMPLED, chunk=12)
    killed: list[int] = []

    def kill_once(pool: ActorPool) -> None:
        if not killed:
            pid = pool.pids()[1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    opts = OPTS if ray_restarts else OPTS.changed(max_restarts=0, max_task_retries=0)
    with RayGenerator(FACTORY, opts, block_size=2, on_block=kill_once) as g:
        got = generate_rollouts(model, spec, tmp_path / "ray.jsonl", todo, SAMPLED, chunk=12, generator=g)
    assert killed
    rows = read_rollouts(tmp_path / "ray.jsonl")
    assert sorted(r.key for r in rows) == sorted(todo)  # each planned rollout exactly once
    assert got == single


def test_rollouts_resume_across_ray_and_single_process(model, gen, tmp_path):
    """A Ray run resumes a single-process file and the reverse: the same rows, the same keys."""
    spec = load_trait("evil")
    todo = plan(spec, 2, 2, 2)  # 16 rollouts
    want = generate_rollouts(model, spec, tmp_path / "single.jsonl", todo, SAMPLED, chunk=5)
    path = tmp_path / "mixed.jsonl"
    generate_rollouts(model, spec, path, todo[:7], SAMPLED, chunk=5)  # a single-process run cut short
    lines = path.read_text().splitlines()
    got = generate_rollouts(model, spec, path, todo, SAMPLED, chunk=5, generator=gen)
    assert path.read_text().splitlines()[:7] == lines  # the done rows were kept, not regenerated
    assert got == want
    assert len(read_rollouts(path)) == len(todo)


def test_cli_datasets_build_on_ray(model, tmp_path, monkeypatch):
    """`pvlens datasets build --ray --workers 1` (address optional): the same cache and set files
    as the run without --ray."""
    import pvlens.core.ray_pool as ray_pool
    from pvlens.cli import main

    monkeypatch.setattr(pvlens, "load_model", lambda *a, **kw: model)
    monkeypatch.setattr(ray_pool, "ModelLoader", lambda name, device: FACTORY)  # what workers load
    calls: list[int] = []
    real = RayGenerator.__call__

    def counted(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(RayGenerator, "__call__", counted)
    args = ["datasets", "build", "--sets", "evil", "--levels", "normal", "--size", "2",
            "--max-new-tokens", "5"]
    main([*args, "--out", str(tmp_path / "single")])
    assert not calls
    main([*args, "--out", str(tmp_path / "ray"), "--ray", "--workers", "1"])  # 1 CPU: the module pool holds the other
    assert calls  # the answers were generated on the Ray pool
    for rel in ("generations.jsonl", "evil/normal.jsonl", "evil/candidates/normal/candidates.jsonl"):
        single = read_jsonl_lenient(tmp_path / "single" / rel)
        assert single, rel
        assert read_jsonl_lenient(tmp_path / "ray" / rel) == single, rel
    inputs = [json.loads((tmp_path / d / "evil/candidates/normal/inputs.json").read_text()) for d in ("single", "ray")]
    assert inputs[0] == inputs[1]  # the same resume state


def test_bad_block_size():
    with pytest.raises(ValueError, match="block_size"):
        RayGenerator(FACTORY, OPTS, block_size=0)
