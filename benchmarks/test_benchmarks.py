"""The benchmark suite on pytest-benchmark: every case of :mod:`fastdnc.bench.cases`, fastdnc and each
baseline of a case in the **same group** (the case's group), so that one run compares them side by
side. ``extra_info`` carries the case, shape, dtype, flops and bytes of fastdnc's product, the matmul
roofline measured in this session and fastdnc's fraction of it, the error against the case's referee
and the product count for spectra; a peer that fails is recorded with its error (``failed``).

    FASTDNC_BENCH_SIZE=full pytest benchmarks/test_benchmarks.py --benchmark-json=OUT.json   # make bench
    FASTDNC_BENCH_SIZE=tiny pytest benchmarks/test_benchmarks.py --benchmark-disable        # CI: each body once
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from fastdnc.bench.cases import BUILDERS, GROUPS, relative_error
from fastdnc.bench.timing import bandwidth_peak, matmul_peak

SIZE = os.environ.get("FASTDNC_BENCH_SIZE", "tiny")
IMPLEMENTATIONS = {
    "layer": ["fastdnc", "autograd (fresh graph)", "autograd (cached graph)", "torch.func", "curvlinops"],
    "full": ["fastdnc", "autograd (fresh graph)", "autograd (cached graph)", "torch.func", "curvlinops"],
    "spectrum": ["fastdnc", "scipy eigsh"],
    "train": ["fastdnc", "autograd + torch.optim.SGD"],
    "kernels": ["fastdnc", "backend cpp", "backend torch", "torch reference (einsum)"],
    "zoo": ["fastdnc", "autograd (fresh graph)", "autograd (cached graph)", "torch.func", "curvlinops"],
    "real": [
        "fastdnc",
        "fd.HessianOperator (restricted)",
        "autograd (fresh graph)",
        "autograd (cached graph)",
        "torch.func",
    ],
    "distributed": ["fastdnc", "1 process, 1 thread", "1 process, all cores"],
}


@functools.cache
def case(group: str):
    _BUILT.add(group)
    return BUILDERS[group](SIZE)


@pytest.fixture(scope="session", autouse=True)
def _close_cases():
    """Release what the cases hold (the other ranks of the distributed case) when the session ends."""
    yield
    for group in GROUPS:
        if group in _BUILT:
            case(group).close()


_BUILT: set[str] = set()


@functools.cache
def peak(dtype: torch.dtype) -> float:
    return matmul_peak(dtype) if SIZE != "tiny" else float("nan")


@functools.cache
def bandwidth() -> float:
    return bandwidth_peak() if SIZE != "tiny" else float("nan")


@functools.cache
def reference(group: str):
    c = case(group)
    return c.implementations[c.reference]()


def test_every_case_lists_its_implementations():
    for group in GROUPS:
        assert list(case(group).implementations) == IMPLEMENTATIONS[group]


@pytest.mark.parametrize(
    "group, impl", [(g, i) for g in GROUPS for i in IMPLEMENTATIONS[g]], ids=lambda x: x.replace(" ", "_")
)
def test_benchmark(benchmark, group, impl):
    c = case(group)
    benchmark.group = group
    benchmark.name = f"{group}: {impl}"
    benchmark.extra_info.update(c.info(), impl=impl)
    fn = c.implementations[impl]
    if isinstance(fn, str):  # a peer that is not installed: recorded, not timed
        benchmark.extra_info["failed"] = fn
        benchmark.pedantic(lambda: None, rounds=1)
        return
    try:
        result = benchmark.pedantic(fn, rounds=c.rounds) if c.rounds else benchmark(fn)
    except Exception as e:  # noqa: BLE001 - a failing peer is recorded as failed with its error
        if impl == "fastdnc":
            raise
        benchmark.extra_info["failed"] = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        return
    error = relative_error(result, reference(group))
    tol = 1e-8 if c.dtype == torch.float64 else 1e-3
    if group == "spectrum":
        tol = 1e-6  # both stop at a residual tolerance
    benchmark.extra_info["error"] = error
    if impl in c.products:
        benchmark.extra_info["products"] = c.products[impl]()
    if benchmark.stats is not None and impl == "fastdnc" and SIZE != "tiny":
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["bandwidth"] = bandwidth()
        benchmark.extra_info["bandwidth_fraction"] = c.bytes / seconds / bandwidth()
        if c.flops > 0:
            benchmark.extra_info["roofline"] = peak(c.dtype)
            benchmark.extra_info["roofline_fraction"] = c.flops / seconds / peak(c.dtype)
    assert error <= tol, f"{impl} differs from {c.reference} by {error:.2e}"
