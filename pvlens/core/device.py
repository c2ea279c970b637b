"""Device and compute-dtype choices: detect what the hardware runs fast, never assume."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def resolve_device(device: str | torch.device | None) -> str:
    """'auto' / None → cuda if available else cpu; anything else is validated and returned."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return device


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX-bf16 or AVX512-bf16 units (bf16 matmuls several times faster)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def fast_dtype(device: str | torch.device) -> torch.dtype:
    """The dtype to run bulk forward passes in on this device: bf16 where fast, else fp32."""
    device = str(device)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
