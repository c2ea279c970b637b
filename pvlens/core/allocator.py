"""glibc's allocator, told to keep freed memory for the next training step.

A LoRA step on TransformerLens frees and reallocates the same large activation buffers every
step. glibc's defaults hand freed memory back to the operating system (trimming the heap top, or
unmapping chunks above a threshold that adapts as it goes), so the next step faults every page
back in and the kernel zeroes it. With a fixed 32 MiB mmap threshold (glibc's maximum on 64-bit)
and no trimming, those buffers are reused instead: on an Intel Xeon (AMX), one thread, the
default model, `benchmarks/bench_finetune.py` read pvlens's step at 109–117 tokens/s without it
and 123–137 with it over two runs each, and peft + HF's step unchanged (161–168), in the same
hour. The price is that the process keeps its peak heap until it exits, which is why pvlens's
command line sets it (its processes end when the job does) and the library leaves it to the user.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD = -1
"""mallopt parameter: heap bytes free at the top before glibc gives them back."""
M_MMAP_THRESHOLD = -3
"""mallopt parameter: allocations at least this large are mmapped (and unmapped when freed)."""
MMAP_THRESHOLD = 32 * 2**20
"""glibc's largest accepted mmap threshold on 64-bit (half its 64 MiB heap size)."""
NEVER_TRIM = 2**31 - 1
"""The largest trim threshold mallopt's int takes: in effect, never trim."""
OPT_OUT = "PVLENS_KEEP_FREED_MEMORY"
"""Set to 0 to leave glibc's defaults alone in pvlens's command line."""


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (process-wide, once). Returns whether it applied:
    False off glibc (macOS, Windows, musl), or when glibc refused a setting."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def keep_freed_memory_unless_opted_out() -> bool:
    """`keep_freed_memory()` unless the environment sets PVLENS_KEEP_FREED_MEMORY=0."""
    if os.environ.get(OPT_OUT, "1").strip() == "0":
        return False
    return keep_freed_memory()


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the only one with these mallopt parameters), else None.

    The process's own symbols (`dlopen(NULL)`) include the C library it runs on, so no search
    for a library file is needed (`ctypes.util.find_library` would run `ldconfig -p`)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 — only glibc exports it
    except (OSError, AttributeError, TypeError):  # TypeError: Windows takes no None
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
