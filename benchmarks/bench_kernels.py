"""Every CPU kernel side by side with torch, and the measurements behind each ``backend="auto"``
rule of ``fastdnc/kernels/dispatch.py`` (``AUTO_RULES``).

Run: ``python benchmarks/bench_kernels.py`` (prints the markdown tables).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_peak, md_table, median_time  # noqa: E402

from fastdnc.kernels import (  # noqa: E402
    backend_status,
    dispatch,
    reference,
    two_sided_product,
)

SHAPES = [(16, 10, 64), (8, 64, 64), (8, 128, 128), (1, 256, 256), (1, 512, 512)]


def run() -> str:
    rows = []
    for dtype in (torch.float32, torch.float64):
        peak = matmul_peak(dtype)
        for b, p, q in SHAPES:
            o, v, i = torch.randn(p, p, dtype=dtype), torch.randn(b, p, q, dtype=dtype), torch.randn(q, q, dtype=dtype)
            flops = 2 * b * (p * p * q + p * q * q)
            t_ref = median_time(lambda: reference.two_sided_product(o, v, i))
            row = [str(dtype).replace("torch.", ""), f"{b}×{p}×{q}", f"{flops / t_ref / peak:.0%}"]
            for backend in ("cpp",):
                if backend_status(backend, torch.device("cpu"), dtype) is None:
                    t = median_time(lambda: two_sided_product(o, v, i, backend=backend))
                    row += [f"{t_ref / t:.2f}×", f"{flops / t / peak:.0%}"]
                else:
                    row += ["n/a", "n/a"]
            rows.append(row)
    return md_table(
        ["dtype", "batch×p×q", "torch: % of matmul peak", "cpp speed-up vs torch", "cpp: % of matmul peak"], rows
    )


# (kernel, shape label, arguments builder): shapes the operators call each kernel at
CORE_SHAPES = [(2000, 10, 64), (2000, 10, 256), (500, 100, 64)]  # (N, K, p)
RULE_CASES = [
    *[
        (
            "gn_sample_core",
            f"N={n}, K={kk}, p={p}, k={k}",
            lambda dt, n=n, kk=kk, p=p, k=k: (_rand(n, kk, p, dt), _rand(k, n, p, dt)),
        )
        for n, kk, p in CORE_SHAPES
        for k in (1, 4, 8, 16)
    ],
    ("gn_assemble", "N=2000, K=10, p=q=32", lambda dt: (_rand(32, 2000, dt), _rand(2000, 10, 32, dt), 1.0)),
    *[
        (
            "gn_gram",
            f"N={n}, K=10, p={p}",
            lambda dt, n=n, p=p: (_rand(n, 10, p, dt), _rand(n, n, dt), 1.0),
        )
        for n, p in ((400, 64), (400, 512))
    ],
]


def _rand(*shape_and_dtype):
    *shape, dtype = shape_and_dtype
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(0))


def _auto_choice(kernel: str, args: tuple) -> str:
    """The backend that ``auto`` picks for these arguments (the rule under test)."""
    if kernel == "gn_sample_core" and args[1].shape[0] >= dispatch.SAMPLE_CORE_CPP_VECTORS:
        return "torch"
    return dispatch.AUTO_RULES[kernel]["cpu"]


def rules() -> str:
    """Per rule case: torch and cpp times, the faster one, and whether ``auto`` picks it."""
    rows = []
    for dtype in (torch.float32, torch.float64):
        for kernel, label, build in RULE_CASES:
            args = build(dtype)
            if kernel == "gn_gram":
                m = args[0].shape[0] * args[0].shape[1]
                args = (*args, torch.zeros(m, m, dtype=dtype))
            times = {}
            for backend in ("torch", "cpp"):
                if backend_status(backend, torch.device("cpu"), dtype, kernel) is None:
                    times[backend] = median_time(lambda b=backend: getattr(dispatch, kernel)(*args, backend=b))
            faster = min(times, key=times.get)
            auto = _auto_choice(kernel, args)
            speedup = times["torch"] / times["cpp"] if "cpp" in times else float("nan")
            agrees = "yes" if auto == faster or abs(speedup - 1) < 0.1 else "**no**"
            rows.append([kernel, label, str(dtype).replace("torch.", ""), f"{speedup:.2f}×", faster, auto, agrees])
    return md_table(
        ["kernel", "shape", "dtype", "cpp speed-up vs torch", "faster", "auto picks", "rule agrees (or within 10%)"],
        rows,
    )


if __name__ == "__main__":
    print(run())
    print()
    print(rules())
