"""Device and compute-dtype choices: detect what the hardware runs fast, never assume."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from pvlens.errors import InputError


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


DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def as_dtype(
    dtype: torch.dtype | str | None, device: str | torch.device | None = None
) -> torch.dtype | None:
    """The one parser of dtype arguments: a torch.dtype passes through, None stays None (the
    caller's default), a name ("float32", "bf16", ...) maps to its dtype, and "auto" is the
    fastest dtype on `device` (`fast_dtype`; it needs the device)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device is None:
            raise InputError("dtype 'auto' needs a device to choose for; pass a concrete dtype")
        return fast_dtype(device)
    if dtype not in DTYPE_NAMES:
        raise InputError(f"unknown dtype {dtype!r}; use 'auto' or one of {sorted(DTYPE_NAMES)}")
    return DTYPE_NAMES[dtype]
