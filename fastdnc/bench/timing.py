"""Timing for the benchmarks: medians of repeated rounds, and the two rooflines that fractions refer
to, both measured in the same session: the matmul roofline (FLOP/s of one large GEMM, same dtype) for
flop-bound products, and the memory-bandwidth roofline (bytes/s of one large copy) for products that
read more than they compute."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_time(fn: Callable[[], object], min_time: float = 0.3, repeats: int = 5) -> float:
    """Median over ``repeats`` rounds of the mean time of ``fn`` (each round runs ≥ ``min_time`` /
    ``repeats``), after one warm-up call."""
    fn()
    rounds = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time / repeats:
                break
        rounds.append(dt / n)
    return statistics.median(rounds)


def bandwidth_peak(mib: int = 256) -> float:
    """Measured bytes/s of one large ``Tensor.copy_`` (``mib`` MiB read and as many written, far above
    the caches): the memory-bandwidth roofline."""
    n = mib * 2**20 // 8
    src, dst = torch.ones(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    return 2 * 8 * n / median_time(lambda: dst.copy_(src))


def matmul_peak(dtype: torch.dtype, n: int = 1024) -> float:
    """Measured FLOP/s of one large square ``torch.matmul``: the roofline that fractions refer to."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / median_time(lambda: a @ b)
