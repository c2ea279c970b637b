"""glibc told to keep freed memory: it applies on glibc, stops the page faults it is for, and the
command line applies it unless opted out."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from pvlens.core import allocator

GLIBC = platform.libc_ver()[0] == "glibc"

# Two rounds of 64 x 4 MiB tensors, written then freed; prints the minor page faults of round 2.
FAULTS = """
import resource, sys, torch
from pvlens.core.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def round_():
    xs = [torch.ones(1 << 20) for _ in range(64)]
    del xs
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_round_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


def test_applies_exactly_on_glibc() -> None:
    assert allocator.keep_freed_memory() is GLIBC


@pytest.mark.skipif(not GLIBC, reason="the setting exists only in glibc")
def test_freed_buffers_are_reused_instead_of_faulted_back_in() -> None:
    applied, kept = _second_round_faults("keep")
    _, default = _second_round_faults("default")
    pages = 64 * (4 << 20) // 4096  # the round's memory in 4 KiB pages
    assert applied == "True"
    assert default > pages // 2, f"glibc's defaults were expected to fault the round back in: {default}"
    assert kept < pages // 8, f"kept memory still faulted {kept} pages of {pages}"


def test_opt_out_leaves_glibc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.OPT_OUT, "0")
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: pytest.fail("called despite the opt-out"))
    assert allocator.keep_freed_memory_unless_opted_out() is False


def test_the_command_line_applies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import pvlens.cli as cli

    calls: list[bool] = []
    monkeypatch.setattr(cli, "keep_freed_memory_unless_opted_out", lambda: calls.append(True) or True)
    cli.main(["--version"])
    assert calls == [True]
