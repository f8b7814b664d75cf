"""docs/gpu.md is the current output of the GPU performance model (benchmarks/gpu_model.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_model  # noqa: E402
from gpu_cases import CASES, WORK  # noqa: E402


def test_the_page_is_regenerated():
    assert (ROOT / "docs" / "gpu.md").read_text() == gpu_model.page(), (
        "run: python benchmarks/gpu_model.py --out docs/gpu.md"
    )


def test_every_kernel_with_a_gpu_backend_is_modelled():
    from fastdnc.kernels.dispatch import KERNELS

    gpu_kernels = {k for k, backends in KERNELS.items() if {"triton", "cuda"} & set(backends)}
    assert gpu_kernels == set(WORK) == {c.kernel for c in CASES}


def test_roofline_is_the_slower_of_compute_and_memory():
    assert gpu_model.predicted(1e12, 1e9, 1e12) == (1.0, "compute")
    t, bound = gpu_model.predicted(1e6, 4.8e12, 1e12)
    assert bound == "memory" and abs(t - 1.0) < 1e-12


def test_the_fused_gram_does_half_the_flops_of_torch():
    case = next(c for c in CASES if c.kernel == "gn_gram")
    assert case.work("fused", 4)[0] * 2 == case.work("torch", 4)[0]
