"""Batched two-sided product Y_j = O V_j I: every CPU backend side by side with torch.

Run: ``python benchmarks/bench_kernels.py`` (prints a markdown table).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_peak, md_table, median_time  # noqa: E402

from fastdnc.kernels import (  # noqa: E402
    backend_status,
    reference,  # noqa: E402
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


if __name__ == "__main__":
    print(run())
