"""Device and compute-dtype choices: detect what the hardware runs fast, never assume."""

from __future__ import annotations

import functools
import os

import torch

from pvlens.core.machine import cpu_flags
from pvlens.errors import InputError

DEVICE_HELP = "use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"


def resolve_device(device: str | torch.device | None) -> str:
    """'auto' / None → cuda if available else cpu; anything else is validated and returned."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise InputError(f"device {device!r} is not a device name; {DEVICE_HELP}") from None
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r} is not supported by pvlens; {DEVICE_HELP}")
    if parsed.type == "cuda":
        _check_cuda_index(device, parsed.index)
    return device


def _check_cuda_index(device: str, index: int | None) -> None:
    if not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise InputError(
            f"device {device!r} requested but only {count} CUDA device(s) exist (cuda:0 … cuda:{count - 1})"
        )


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX-bf16 or AVX512-bf16 units (bf16 matmuls several times faster)."""
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_flags()))


def cpu_has_amx() -> bool:
    """True when the CPU has AMX-bf16 tiles (where oneDNN's bf16 kernels differ most)."""
    return "amx_bf16" in cpu_flags()


COMPUTE_DTYPE_ENV = "PVLENS_COMPUTE_DTYPE"
DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
"""Every dtype name pvlens accepts, in arguments and in PVLENS_COMPUTE_DTYPE."""


def fast_dtype(device: str | torch.device) -> torch.dtype:
    """The dtype to run bulk forward passes in on this device: bf16 where fast, else fp32.

    This is what every `dtype="auto"` in pvlens resolves to, so results depend on the machine
    (bf16 on AMX / AVX512-bf16 CPUs). The environment variable PVLENS_COMPUTE_DTYPE
    (float32, bfloat16, float16; unset or "auto": detect) overrides the detection everywhere,
    including passes that take no dtype argument (monitor, prompt shift).
    """
    forced = os.environ.get(COMPUTE_DTYPE_ENV, "").strip().lower()
    if forced and forced != "auto":
        if forced not in DTYPE_NAMES:
            raise ValueError(
                f"{COMPUTE_DTYPE_ENV}={forced!r}: use one of auto, {', '.join(sorted(DTYPE_NAMES))}"
            )
        return DTYPE_NAMES[forced]
    device = str(device)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


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


def dtype_name(dtype: torch.dtype) -> str:
    """"float32", "bfloat16", ... (the torch name without its "torch." prefix)."""
    return str(dtype).removeprefix("torch.")


def resolved_dtype_name(
    dtype: torch.dtype | str | None, device: str | torch.device, default: torch.dtype = torch.float32
) -> str:
    """The name of the dtype a `dtype` argument resolves to on `device` ("auto": this machine's
    `fast_dtype`, PVLENS_COMPUTE_DTYPE included; None: `default`, the caller's model dtype).

    For the inputs of stored results: "auto" is not an input, the dtype it picks is, so a
    number computed in bf16 on an AMX CPU is never reused for an fp32 run elsewhere.
    """
    return dtype_name(as_dtype(dtype, device) or default)
