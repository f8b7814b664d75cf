"""Large allocations reused instead of returned to the kernel (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB by its own adaptation) with a
fresh ``mmap`` and gives it back with ``munmap`` when it is freed. A training step on large batches
allocates activations of hundreds of MiB every step, so each step faults every page of them in again
and the kernel zeroes it. :func:`reuse_large_allocations` raises the mmap threshold to 1 GiB and the
trim threshold to 2 GiB (``mallopt``), so such blocks come from the heap and are reused after they
are freed. On ``fastdnc reproduce --preset real-paper`` (a CNN on batches of 1,000 digits) this
removes nearly all of the process's system time (``/usr/bin/time`` shows it: tens of millions of
minor page faults before, under a million after). The cost is memory: freed blocks stay with the
process (up to the trim threshold) until it exits, so its peak resident memory is higher.

The command line calls it once per command; a library user's process is left as it is (call it
from your own script to get the same effect).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2 << 30


def reuse_large_allocations() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring); ``True`` when both took
    effect, ``False`` where the C library is not glibc or refuses."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
