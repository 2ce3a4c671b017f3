"""glibc malloc settings for a training process (Linux with glibc; a no-op elsewhere).

A CPU training step allocates and frees the same large activation buffers every step: at batch 128
one 16-channel 28×28 float32 map of a CIFAR ResNet is 6.4 MB. glibc serves blocks above its mmap
threshold (128 KB at start, raised adaptively only when such a block is freed) with a fresh
``mmap`` each time, and every page of a fresh mapping is a page fault that the kernel zeroes:
about 2,000 faults per teacher forward of resnet56 at batch 128 (``benchmarks/speed.md``). Keeping
blocks up to 32 MB on the heap, and not trimming the heap back after each step, makes the same
buffers come back warm, as jemalloc/tcmalloc would. The cost is that the process keeps its peak
heap instead of returning it to the system between steps.

``KDLAB_MALLOC=off`` in the environment leaves glibc's defaults.
"""
from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20

_applied: bool | None = None


def tune_allocator() -> bool:
    """Apply the settings once per process; True when they are in force."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("KDLAB_MALLOC", "").lower() == "off" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt  # absent on musl
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(mallopt(k, v) == 1 for k, v in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                                    (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
    return _applied
