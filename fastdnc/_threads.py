"""Intra-op thread counts chosen by problem size.

A GEMM of 64 × 64 × 40 gains nothing from a second thread, and on a machine whose cores other
processes also use, torch's spinning intra-op threads then wait for each other (a user measured a
small UFM 100× slower under load). Work whose largest GEMM is below :data:`SERIAL_GEMM_FLOPS`
therefore runs on one thread. Larger work keeps the caller's setting, but never more threads than
the cores that other processes leave free (:func:`free_cores`: the runnable threads of the machine
that are not this process's, sampled at most every :data:`LOAD_SAMPLE_SECONDS`): a barrier-heavy
parallel job (a dense eigendecomposition, Lanczos' orthogonalisation) whose second thread shares a
core with another process waits for it at every barrier (the offline MNIST analysis ran 4× slower
beside one busy core on two threads). The caller's setting is restored afterwards.

The threshold comes from ``python benchmarks/bench_train.py`` (the "Threads by problem size"
tables of docs/benchmarks.md: the gain of a second thread by GEMM size, and training alone and
beside a busy core).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

SERIAL_GEMM_FLOPS = 2.0e6  # below this (2·m·n·k), one thread
LOAD_SAMPLE_SECONDS = 0.2  # how long a sample of the machine's load is reused


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


def runnable_elsewhere() -> int | None:
    """Threads of other processes that are running or waiting for a core now: the machine's
    runnable count (``procs_running`` of ``/proc/stat``) less this process's running threads;
    ``None`` where the system does not say (not Linux)."""
    try:
        with open("/proc/stat", "rb") as f:
            running = next(int(line.split()[1]) for line in f if line.startswith(b"procs_running"))
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat", "rb") as f:
                    own += f.read().rsplit(b")", 1)[1].split()[0] == b"R"
            except OSError:  # the thread ended meanwhile
                continue
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return max(0, running - own)


_LOAD: list[float] = [-1.0, 0.0]  # [time of the sample, free cores]


def free_cores() -> int:
    """The usable cores that other processes leave free now (at least 1; all of them when the
    system does not say), sampled at most every :data:`LOAD_SAMPLE_SECONDS`."""
    now = time.monotonic()
    if now - _LOAD[0] > LOAD_SAMPLE_SECONDS:
        others = runnable_elsewhere()
        cores = usable_cores()
        _LOAD[:] = [now, float(cores if others is None else max(1, cores - others))]
    return int(_LOAD[1])


_FIXED: list[int] = []  # a count every operation uses (the command line's --threads), innermost last


def threads_for(gemm_flops: float, threads: int | None = None) -> int:
    """The intra-op thread count for work whose largest GEMM costs ``gemm_flops``: ``threads`` when
    given (capped at the usable cores), the count of an enclosing :func:`fixed_threads`, one thread
    below :data:`SERIAL_GEMM_FLOPS`, else the current setting capped at :func:`free_cores`."""
    if threads is not None:
        return check_threads(threads) or 1
    if _FIXED:
        return _FIXED[-1]
    return 1 if gemm_flops < SERIAL_GEMM_FLOPS else min(torch.get_num_threads(), free_cores())


def dense_threads(order: int) -> int:
    """The thread count of a dense decomposition (eigh, eigvalsh) of an ``order`` × ``order`` matrix:
    :func:`threads_for` of its O(order³) flops."""
    return threads_for(float(order) ** 3)


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
