"""What machine a measurement ran on, recorded beside every timing pvlens publishes.

Two virtual machines can both call themselves "Intel(R) Xeon(R) Processor" and still differ
severalfold in fp32 speed and far more in bf16 (AMX or not: docs/benchmarks.md), so a
benchmark's record names the CPU *and* the instruction-set extensions that decide which kernels
run, the core count and torch's version.
A timing is comparable with another only when these match.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")
"""The /proc/cpuinfo flags that change which matmul kernels run (and so the speeds measured)."""


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or what `platform` knows elsewhere."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """Those of SPEED_FLAGS the CPU has (empty when /proc/cpuinfo is unreadable)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in SPEED_FLAGS if f in have]
    return []


def cpu_facts() -> dict[str, Any]:
    """CPU model, its speed-relevant flags and core count (for records that list versions apart)."""
    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count()}


def machine_facts() -> dict[str, Any]:
    """`cpu_facts` plus torch's version, for benchmark results files."""
    import torch

    return {**cpu_facts(), "torch": torch.__version__}


def describe(facts: dict[str, Any]) -> str:
    """One line for a docs table, e.g. '2 CPUs: Intel(R) Xeon(R) ... (avx2, avx512f); torch 2.13.0'."""
    flags = facts.get("cpu_flags")
    if flags is None:
        isa = "flags not recorded"
    else:
        isa = ", ".join(flags) or "none of " + "/".join(SPEED_FLAGS)
    torch = f"; torch {facts['torch']}" if "torch" in facts else ""
    return f"{facts.get('cpus')} CPUs: {facts.get('cpu')} ({isa}){torch}"


__all__ = ["SPEED_FLAGS", "cpu_facts", "cpu_flags", "cpu_name", "describe", "machine_facts"]
