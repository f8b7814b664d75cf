"""Refuse work that cannot fit, before allocating it: memory (and time) estimates.

Every entry point that can allocate memory quadratic in its problem (``to_dense``, dense
``eigh``/``eigvalsh``, the explicit Gauss–Newton assembly, model construction, training) asks
:func:`require_memory` first. The estimate is the **peak** the operation reaches, as a multiple of
its output measured on this package's code paths by ``python benchmarks/bench_memory.py`` (peak
resident memory growth over the output's size), never the output's size alone. When it exceeds the
memory available now (``MemAvailable`` of ``/proc/meminfo`` on the CPU, free device memory on a
GPU), :class:`InsufficientMemoryError` says how much is needed, how much there is and what to
use instead.

Dense symmetric eigendecompositions are also slow: above :data:`SLOW_EIGH` unknowns
:func:`warn_dense_eigh` warns with a time estimate (:math:`c\\,n^3` with the rate measured by the
same script).
"""

from __future__ import annotations

import os
import warnings

import torch

# Peak memory / output size, measured by benchmarks/bench_memory.py (docs/memory.md), rounded up.
CHUNK_COPIES = 4  # to_dense: the P x P output plus about three P x chunk blocks (unit vectors, product, scaling)
PEAK_EIGVALSH = 3.5  # the dense matrix, LAPACK's working copy and workspace
PEAK_EIGH = 6.0  # the dense matrix, the eigenvectors and LAPACK's workspace
PEAK_GN_ASSEMBLY = 2.0  # the packed Gauss-Newton assembly: the output and its packed triangles
# Seconds per n^3 of a dense float64 eigendecomposition on the 2-core development machine
# (benchmarks/bench_memory.py prints the measured rate); for a warning, not a promise.
EIGH_SECONDS_PER_N3 = {"values": 2.0e-10, "vectors": 2.5e-10}
SLOW_EIGH = 4096


class SlowComputationWarning(UserWarning):
    """A dense computation will take long; the message gives the estimate and a faster route."""


class InsufficientMemoryError(MemoryError):
    """The work would need more memory than is available; the message gives both and a way out."""


def peak_to_dense(n: int, chunk: int) -> float:
    """Peak / output of the generic ``to_dense`` of an n × n operator in column chunks."""
    return 1.0 + CHUNK_COPIES * min(chunk, n) / max(n, 1)


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory available for new allocations on ``device`` now (``None`` when unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no driver: the allocation itself will say
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def gib(nbytes: float) -> str:
    """``nbytes`` in GiB (or MiB below 1 GiB), for messages."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def require_memory(
    nbytes: float, what: str, device: torch.device | str = "cpu", instead: str = "", extra: str = ""
) -> None:
    """Raise :class:`InsufficientMemoryError` if ``nbytes`` (an estimated peak) exceeds the memory
    available on ``device``: "``what`` needs ~X GiB, this machine has Y GiB available; use …"."""
    have = available_bytes(device)
    if have is None or nbytes <= have:
        return
    where = "this machine has" if torch.device(device).type == "cpu" else f"{device} has"
    msg = f"{what} needs ~{gib(nbytes)}, {where} {gib(have)} available"
    if extra:
        msg += f" ({extra})"
    raise InsufficientMemoryError(msg + (f"; use {instead} instead" if instead else ""))


def dense_eigh_seconds(n: int, vectors: bool) -> float:
    """Estimated seconds of a dense float64 symmetric eigendecomposition of order ``n``."""
    return EIGH_SECONDS_PER_N3["vectors" if vectors else "values"] * float(n) ** 3


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 3600
        else f"{seconds / 60:.0f} min"
        if seconds >= 60
        else f"{seconds:.0f} s"
    )


def require_dense(
    n: int, itemsize: int, device: torch.device | str, what: str, peak: float, eig: str | None = None
) -> None:
    """The memory check of an n × n dense result (``peak`` × its size), and for ``eig`` in
    ``("values", "vectors")`` the time warning of :func:`warn_dense_eigh`."""
    instead = "the structured methods (exact Kronecker eigh, eigvalsh of a Gauss-Newton block) or fd.lanczos"
    seconds = dense_eigh_seconds(n, eig == "vectors") if eig else None
    extra = f"and about {_duration(seconds)} of compute" if seconds and seconds > 60 else ""
    require_memory(peak * float(n) * n * itemsize, f"{what} of a {n} × {n} operator", device, instead, extra)
    if eig and n > SLOW_EIGH:
        warn_dense_eigh(n, eig == "vectors")


def warn_dense_eigh(n: int, vectors: bool) -> None:
    """Warn that a dense eigendecomposition of order ``n`` will take long, with the estimate."""
    warnings.warn(
        f"a dense eigendecomposition of order {n} takes about {_duration(dense_eigh_seconds(n, vectors))} "
        "on one core of a 2-core development machine (fd.lanczos gives the top eigenpairs far faster)",
        SlowComputationWarning,
        stacklevel=3,
    )


def resident_bytes(device: torch.device) -> int:
    """Memory in use now: the CUDA allocator's on a GPU, the process's resident set on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux: no estimate, the cache is built
        pass
    return 0
