"""Intra-op thread counts chosen by problem size.

A GEMM of 64 × 64 × 40 gains nothing from a second thread, and on a machine whose cores other
processes also use, torch's spinning intra-op threads then wait for each other (a user measured a
small UFM 100× slower under load). Work whose largest GEMM is below :data:`SERIAL_GEMM_FLOPS` therefore runs on
one thread; larger work keeps the caller's setting. The caller's setting is restored afterwards.

The threshold comes from ``python benchmarks/bench_train.py`` (the "Threads by problem size"
tables of docs/benchmarks.md: the gain of a second thread by GEMM size, and training alone and
beside a busy core).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

SERIAL_GEMM_FLOPS = 2.0e6  # below this (2·m·n·k), one thread


class ThreadCountWarning(UserWarning):
    """A requested thread count was more than the cores this process may use; it was capped."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which cgroup cpusets and ``taskset``
    restrict), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int | None, warn: bool = True) -> int | None:
    """``threads`` as given (``None`` stays), capped at :func:`usable_cores` (with a
    :class:`ThreadCountWarning` when ``warn``): more threads than cores only wait for each other."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    cores = usable_cores()
    if threads > cores and warn:
        warnings.warn(
            f"threads={threads} is more than the {cores} core{'s' if cores > 1 else ''} this process may use: "
            f"using {cores}",
            ThreadCountWarning,
            stacklevel=3,
        )
    return min(threads, cores)


_FIXED: list[int] = []  # a count every operation uses (the command line's --threads), innermost last


def threads_for(gemm_flops: float, threads: int | None = None) -> int:
    """The intra-op thread count for work whose largest GEMM costs ``gemm_flops``: ``threads`` when
    given (capped at the usable cores), the count of an enclosing :func:`fixed_threads`, one thread
    below :data:`SERIAL_GEMM_FLOPS`, else the current setting."""
    if threads is not None:
        return check_threads(threads) or 1
    if _FIXED:
        return _FIXED[-1]
    return 1 if gemm_flops < SERIAL_GEMM_FLOPS else torch.get_num_threads()


@contextmanager
def fixed_threads(count: int | None) -> Iterator[None]:
    """Within the block every operation uses ``count`` threads (capped at the usable cores, with a
    :class:`ThreadCountWarning`) instead of choosing by size; ``None`` changes nothing."""
    if count is None:
        yield
        return
    _FIXED.append(check_threads(count) or 1)
    try:
        with intra_op_threads(_FIXED[-1]):
            yield
    finally:
        _FIXED.pop()


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads and restore the caller's count afterwards."""
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
