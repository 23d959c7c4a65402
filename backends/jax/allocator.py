"""glibc malloc settings for the buffers XLA allocates on every call. glibc maps an allocation over
its mmap threshold (128 KB, raised as large ones are freed) with fresh pages and gives a freed heap
top back to the system once it exceeds twice that, so a call's large outputs were mapped anew on
about every other call: GPT-2's 25.7 MB of logits cost 6,282 page faults, 10-25 ms of a 170 ms call.
Serving allocations of up to glibc's ceiling (32 MB) from the heap and keeping up to 256 MB of freed
heap for the next call removes them, as onnxruntime's arena reuses its buffers."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from compiler.pass_infra import switched_off

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts on 64-bit machines
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
SWITCH = "KILN_MALLOC_TUNING"


def keep_freed_buffers_mapped() -> bool:
    """Apply the thresholds above to this process's glibc malloc; returns whether they were set.
    Left alone where the user set glibc's own MALLOC_*_ variables or KILN_MALLOC_TUNING=0, and off
    glibc (another libc or allocator has its own policy)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    if switched_off(os.environ.get(SWITCH)):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
