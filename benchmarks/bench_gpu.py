"""GPU timings (run by benchmarks/gpu_check.sh on a lent GPU): every backend of each kernel against
torch, and the batched Kronecker product's fraction of the measured matmul rate."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402

from fastdnc.kernels import backend_status, dispatch  # noqa: E402


def cuda_time(fn, reps: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    print(f"# GPU benchmarks on {torch.cuda.get_device_name()} (torch {torch.__version__})\n")
    rows = []
    for dtype in (torch.float32, torch.float64):
        n = 8192
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        peak = 2 * n**3 / cuda_time(lambda: a @ b, 5)
        for d in (1024, 2048, 4096):
            batch = 8
            o, v, i = (
                torch.randn(d, d, device=dev, dtype=dtype),
                torch.randn(batch, d, d, device=dev, dtype=dtype),
                torch.randn(d, d, device=dev, dtype=dtype),
            )
            flops = 4 * batch * d**3
            row = [str(dtype).replace("torch.", ""), d, f"{peak / 1e12:.1f}"]
            for backend in ("torch", "triton", "cuda"):
                if backend_status(backend, dev, dtype, "two_sided_product") is None:
                    t = cuda_time(lambda: dispatch.two_sided_product(o, v, i, backend=backend))
                    row.append(f"{flops / t / peak:.0%}")
                else:
                    row.append("n/a")
            rows.append(row)
    print("## Batched two-sided product (batch 8), fraction of the measured matmul rate (TF32 off)\n")
    print(md_table(["dtype", "d", "matmul TFLOP/s", "torch", "triton", "cuda"], rows))
    rows = []
    for dtype in (torch.float32, torch.float64):
        roots = torch.randn(20000, 10, 512, device=dev, dtype=dtype)
        u = torch.randn(1, 20000, 512, device=dev, dtype=dtype)
        x = torch.randn(64, 2000, device=dev, dtype=dtype)
        r_small = torch.randn(2000, 10, 64, device=dev, dtype=dtype)
        row = [str(dtype).replace("torch.", "")]
        for kernel, args in (("gn_sample_core", (roots, u)), ("gn_assemble", (x, r_small, 1.0))):
            t_ref = cuda_time(lambda: getattr(dispatch, kernel)(*args, backend="torch"))
            for backend in ("triton", "cuda"):
                if backend_status(backend, dev, dtype, kernel) is None:
                    t = cuda_time(lambda: getattr(dispatch, kernel)(*args, backend=backend))
                    row.append(f"{t_ref / t:.2f}×")
                else:
                    row.append("n/a")
        rows.append(row)
    print("\n## Gauss–Newton kernels, speed-up over the torch reference on the GPU\n")
    print(md_table(["dtype", "core triton", "core cuda", "assembly triton", "assembly cuda"], rows))


if __name__ == "__main__":
    main()
