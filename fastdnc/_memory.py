"""Refuse work that cannot fit, before allocating it: memory (and time) estimates.

Every entry point that can allocate memory quadratic in its problem (``to_dense``, dense
``eigh``/``eigvalsh``, the explicit Gauss–Newton assembly, model construction, training) asks
:func:`require_memory` first. The estimate is the **peak** the operation reaches, as a multiple of
its output measured on this package's code paths by ``python benchmarks/bench_memory.py`` (peak
resident memory growth over the output's size), never the output's size alone. When it exceeds the
memory available now, :class:`InsufficientMemoryError` says how much is needed, how much there is
and what to use instead. On the CPU "available" is the tightest of three limits: the machine's
``MemAvailable`` (``/proc/meminfo``), the process's memory cgroup (v1 or v2, its own and every
ancestor's limit less what it uses, reclaimable file cache not counted) and its address-space limit
(``ulimit -v``, less its current virtual size); on a GPU, the device's free memory.

Dense symmetric eigendecompositions are also slow: above :data:`SLOW_EIGH` unknowns
:func:`warn_dense_eigh` warns with a time estimate (:math:`c\\,n^3` with the rate measured by the
same script).
"""

from __future__ import annotations

import os
import resource
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
# the largest order the analyses decompose densely (about a minute on two cores); above it, Lanczos
DENSE_LIMIT = 6000


class SlowComputationWarning(UserWarning):
    """A dense computation will take long; the message gives the estimate and a faster route."""


class InsufficientMemoryError(MemoryError):
    """The work would need more memory than is available; the message gives both and a way out."""


def peak_to_dense(n: int, chunk: int) -> float:
    """Peak / output of the generic ``to_dense`` of an n × n operator in column chunks."""
    return 1.0 + CHUNK_COPIES * min(chunk, n) / max(n, 1)


CGROUP_MOUNT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge number


def status_field(path: Path, key: str, scale: int = 1) -> int | None:
    """The integer after ``key`` in a ``key value`` file (``/proc/meminfo``, ``memory.stat``)."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts and parts[0].rstrip(":") == key:
                    return int(parts[1]) * scale
    except (OSError, ValueError, IndexError):
        pass
    return None


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no cgroup v2 limit) is None


def _cgroup_free() -> int | None:
    """The least (limit − usage) over this process's memory cgroup and its ancestors, in cgroup v1
    and v2, reclaimable file cache not counted as used; ``None`` without a limit."""
    try:
        lines = (PROC / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":
            v2 = CGROUP_MOUNT if (CGROUP_MOUNT / "cgroup.controllers").exists() else CGROUP_MOUNT / "unified"
            base, limit_f, usage_f, cache = v2, "memory.max", "memory.current", "inactive_file"
        elif "memory" in controllers.split(","):
            base, limit_f, usage_f, cache = (
                CGROUP_MOUNT / "memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            )
        else:
            continue
        folder = base / path.lstrip("/")
        folder = folder if folder.is_dir() else base
        while True:
            limit, usage = _number(folder / limit_f), _number(folder / usage_f)
            if limit is not None and limit < UNLIMITED and usage is not None:
                used = usage - (status_field(folder / "memory.stat", cache) or 0)
                best = limit - max(used, 0) if best is None else min(best, limit - max(used, 0))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return None if best is None else max(best, 0)


def _address_space_free() -> int | None:
    """``ulimit -v`` less this process's current virtual size; ``None`` without a limit."""
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY:
        return None
    size = status_field(PROC / "self" / "status", "VmSize", 1024) or 0
    return max(soft - size, 0)


def cpu_limits() -> dict[str, int]:
    """The memory available now by each limit that applies: ``"machine"`` (MemAvailable),
    ``"cgroup"``, ``"ulimit -v"``."""
    found = {
        "machine": status_field(PROC / "meminfo", "MemAvailable", 1024),
        "cgroup": _cgroup_free(),
        "ulimit -v": _address_space_free(),
    }
    if found["machine"] is None:
        try:
            found["machine"] = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            pass
    return {k: v for k, v in found.items() if v is not None}


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory available for new allocations on ``device`` now (``None`` when unknown): on the CPU
    the tightest of :func:`cpu_limits`."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no driver: the allocation itself will say
            return None
    limits = cpu_limits()
    return min(limits.values()) if limits else None


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
    where = f"{device} has"
    if torch.device(device).type == "cpu":
        limits = cpu_limits()
        tightest = min(limits, key=limits.__getitem__) if limits and min(limits.values()) == have else "machine"
        where = {
            "machine": "this machine has",
            "cgroup": "this process's memory cgroup has",
            "ulimit -v": "this process's address-space limit (ulimit -v) leaves",
        }[tightest]
    msg = f"{what} needs ~{gib(nbytes)}, {where} {gib(have)} available"
    if extra:
        msg += f" ({extra})"
    raise InsufficientMemoryError(msg + (f"; use {instead} instead" if instead else ""))


def require_vectors(
    size: int, count: float, dtype: torch.dtype, device: torch.device | str, what: str, instead: str = ""
) -> None:
    """The memory check of ``count`` vectors of length ``size`` (a Krylov basis, probes, a block of
    eigenvectors): "``what`` (COUNT vectors of length SIZE) needs ~X GiB, …"."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    require_memory(
        float(size) * float(count) * itemsize, f"{what} ({count:,.0f} vectors of length {size:,})", device, instead
    )


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


@contextmanager
def graph_budget(device: torch.device, what: str, instead: str, share: float = 0.5) -> Iterator[None]:
    """Stop building an autograd graph before it exhausts memory: the tensors autograd saves
    inside the block (forward and ``create_graph`` backward, counted once per storage) are summed as
    they are saved, and past ``share`` of the memory available at entry
    :class:`InsufficientMemoryError` is raised ("``what`` keeps more than X GiB of intermediate
    results alive, … available; use ``instead``"). The count is a lower bound of the graph's size,
    so a refusal is never spurious; torch.func transforms save no tensors through these hooks."""
    have = available_bytes(device)
    if have is None:
        yield
        return
    budget, seen, total = share * have, set(), [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device == device and not t.is_sparse and t.layout == torch.strided:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if key not in seen:
                seen.add(key)
                total[0] += key[1]
                if total[0] > budget:
                    raise InsufficientMemoryError(
                        f"{what} keeps more than {gib(total[0])} of intermediate results alive and only "
                        f"{gib(have)} is available; use {instead}"
                    )
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield
