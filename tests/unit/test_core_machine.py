"""The machine facts recorded beside every published timing."""

from __future__ import annotations

import json
from pathlib import Path

from pvlens.core import machine
from pvlens.io.benchtables import bulk_table

ROOT = Path(__file__).resolve().parents[2]


def test_machine_facts_name_the_cpu_and_only_known_flags() -> None:
    facts = machine.machine_facts()
    assert facts["cpu"] and facts["cpus"] >= 1 and facts["torch"]
    assert set(facts["cpu_flags"]) <= set(machine.SPEED_FLAGS)


def test_flags_are_read_from_cpuinfo(monkeypatch) -> None:
    monkeypatch.setattr(machine, "_cpuinfo", lambda: "model name\t: Test CPU @ 1GHz\nflags\t\t: fpu avx2 amx_bf16 avx512fx\n")
    assert machine.cpu_name() == "Test CPU @ 1GHz"
    assert machine.cpu_flags() == ["avx2", "amx_bf16"]  # avx512fx is not avx512f
    monkeypatch.setattr(machine, "_cpuinfo", lambda: "")
    assert machine.cpu_flags() == []


def test_describe_says_when_flags_were_not_recorded() -> None:
    assert "flags not recorded" in machine.describe({"cpu": "X", "cpus": 2})
    line = machine.describe({"cpu": "X", "cpus": 2, "cpu_flags": ["avx2"], "torch": "2.13.0"})
    assert line == "2 CPUs: X (avx2); torch 2.13.0"
    assert "none of" in machine.describe({"cpu": "X", "cpus": 2, "cpu_flags": []})


def test_bulk_table_names_the_machine_or_says_it_is_missing() -> None:
    data = json.loads((ROOT / "results/bench_bulk/results.json").read_text())
    data.pop("machine", None)
    assert "| machine | not recorded" in bulk_table(data)
    data["machine"] = {"cpu": "Y", "cpus": 2, "cpu_flags": ["avx2"], "torch": "2.13.0"}
    assert "| machine | 2 CPUs: Y (avx2); torch 2.13.0 |" in bulk_table(data)
