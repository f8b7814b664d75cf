"""Training throughput: fastdnc's trainer against a plain autograd + torch.optim loop, one run.

Linear and ReLU UFMs at K=4, d=64, n=10, L=5 (the issue's size), float64 and float32, full-batch
GD. Run: ``python benchmarks/bench_train.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_peak, md_table  # noqa: E402

import fastdnc as fd  # noqa: E402

STEPS = 3000


def autograd_loop(model: fd.DeepUFM, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        model.loss().backward()
        opt.step()


def flops_per_step(k: int, n: int, d: int, depth: int) -> int:
    """Matmul FLOPs of one step: forward, input-gradient and weight-gradient GEMMs."""
    big_n = k * n
    fwd = 2 * big_n * d * (d * (depth - 1) + k)
    return 3 * fwd  # backward = 2 × forward


def run(steps: int = STEPS) -> str:
    rows = []
    k, n, d, depth = 4, 10, 64, 5
    for dtype in (torch.float64, torch.float32):
        peak = matmul_peak(dtype)
        for act in ("linear", "relu"):
            m = fd.DeepUFM(k, n, d, depth, activation=act, dtype=dtype)
            fd.train(m, 100, 0.01, progress=False, log_at=[])
            t0 = time.perf_counter()
            fd.train(m, steps, 0.01, progress=False, log_at=[])
            ours = steps / (time.perf_counter() - t0)
            m2 = fd.DeepUFM(k, n, d, depth, activation=act, dtype=dtype)
            autograd_loop(m2, 100)
            t0 = time.perf_counter()
            autograd_loop(m2, steps)
            base = steps / (time.perf_counter() - t0)
            frac = ours * flops_per_step(k, n, d, depth) / peak
            rows.append([str(dtype).replace("torch.", ""), act, f"{ours:,.0f}", f"{base:,.0f}", f"{ours / base:.2f}×",
                         f"{frac:.1%}"])
    return md_table(["dtype", "activation", "fastdnc steps/s", "autograd+torch.optim steps/s", "speed-up",
                     "% of matmul peak"], rows)


if __name__ == "__main__":
    print(run())
