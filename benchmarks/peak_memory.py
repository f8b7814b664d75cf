"""Peak memory of one job in a fresh process: ``python benchmarks/peak_memory.py JOB N_PER_CLASS``.

Prints ``seconds peak_MiB output_MiB``: the job's wall time, the increase of the process's peak
resident memory over its resident memory just before the job, and the size of the job's result.
Jobs: ``assembly`` (fastdnc's explicit ReLU GN block, d = 64, layer 2 of L = 4, float32) and
``torch_func`` (the same block by ``torch.func.jacrev(grad)`` in chunks of 256 columns),
``full_hvp`` (one product of ``fd.hessian`` of the ReLU UFM (10, n, 256, 4), float32) and
``train_step`` (one training step of that model).
"""

from __future__ import annotations

import sys
import time

import torch

import fastdnc as fd
from fastdnc.curvature import oracles as R


def status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Reset the kernel's resident-memory high-water mark (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main() -> None:
    job, n_per = sys.argv[1], int(sys.argv[2])
    if job in ("full_hvp", "train_step"):
        big = fd.DeepUFM(10, n_per, 256, 4, activation="relu", dtype=torch.float32, seed=0)
        op = fd.hessian(big)
        v = torch.randn(op.size)
        jobs = {"full_hvp": lambda: op @ v, "train_step": lambda: fd.train(big, 1, 1e-3, progress=False, log_at=[])}
        return _measure(jobs[job])
    m = fd.DeepUFM(10, n_per, 64, 4, activation="relu", dtype=torch.float32, seed=0)
    H = fd.layer_hessian(m, 2)
    H.roots()
    f, w = R.block_loss(m, "W_2")
    jobs = {
        "assembly": lambda: H.to_dense(),
        "torch_func": lambda: torch.func.jacrev(torch.func.grad(f), chunk_size=256)(w),
    }
    _measure(jobs[job])


def _measure(fn) -> None:
    reset_peak()
    base = status_mib("VmRSS:")
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = status_mib("VmHWM:") - base
    size = out.numel() * out.element_size() / 2**20 if isinstance(out, torch.Tensor) else 0.0
    print(f"{dt:.4f} {peak:.1f} {size:.1f}")


if __name__ == "__main__":
    main()
