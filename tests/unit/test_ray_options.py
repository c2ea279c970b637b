"""Ray settings without a cluster: `--worker-cpus/--worker-gpus` reach the pool of every
generating command (the pool class is replaced by a recorder), and a local cluster's workers
run at normal priority (ray.init is replaced by a recorder)."""

from __future__ import annotations

from typing import Any

import pytest

from pvlens.cli.ray_gen import ray_generator


class _Recorder:
    seen: list[tuple[Any, Any]] = []

    def __init__(self, loader: Any, opts: Any, progress: bool = False) -> None:
        _Recorder.seen.append((loader, opts))

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def recorder(monkeypatch):
    import pvlens.core.ray_bulk as ray_bulk

    _Recorder.seen = []
    monkeypatch.setattr(ray_bulk, "RayGenerator", _Recorder)
    return _Recorder


def test_no_address_means_no_pool(recorder):
    with ray_generator(None, 4, "m", None, worker_cpus=2, worker_gpus=1) as gen:
        assert gen is None
    assert recorder.seen == []


def test_gpu_actors_load_on_cuda_unless_told(recorder):
    with ray_generator("auto", 8, "m", None, worker_cpus=4, worker_gpus=0.5):
        pass
    with ray_generator("auto", 2, "m", "cpu", worker_cpus=1, worker_gpus=0.5):
        pass
    with ray_generator("local", 2, "m", None):
        pass
    (l1, o1), (l2, _), (l3, o3) = recorder.seen
    assert (o1.workers, o1.worker_cpus, o1.worker_gpus, l1.device) == (8, 4, 0.5, "cuda")
    assert l2.device == "cpu"  # an explicit --device wins
    assert (o3.worker_cpus, o3.worker_gpus, l3.device) == (1.0, 0.0, "cpu")


@pytest.mark.parametrize("command", [["extract"], ["datasets", "build"], ["screen", "run"]])
def test_every_ray_command_has_the_worker_options(command):
    from typer.testing import CliRunner

    from pvlens.cli import app

    res = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "--worker-cpus" in res.output and "--worker-gpus" in res.output


def test_a_local_cluster_runs_its_workers_at_normal_priority(monkeypatch):
    """Ray's default worker niceness (15) starves the workers beside any other job; a local
    cluster pvlens starts uses the option's niceness unless RAY_worker_niceness is set."""
    import ray

    from pvlens.core.ray_pool import RayOptions, connect

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    assert connect(RayOptions(local_worker_niceness=3)) is True
    import os

    assert os.environ["RAY_worker_niceness"] == "3" and calls[0]["address"] == "local"
    monkeypatch.setenv("RAY_worker_niceness", "7")
    connect(RayOptions())
    assert os.environ["RAY_worker_niceness"] == "7"  # the user's setting wins
    monkeypatch.delenv("RAY_worker_niceness")
    connect(RayOptions(address="auto"))  # joining a cluster: its own settings, nothing set here
    assert "RAY_worker_niceness" not in os.environ
