"""Every GPU kernel (Triton, CUDA) against the float64 CPU reference; runs only on a CUDA GPU
(``benchmarks/gpu_check.sh`` on a lent machine)."""

from __future__ import annotations

import pytest
import torch
from conftest import backends_for

import fastdnc as fd
from fastdnc.curvature import oracles as R
from fastdnc.kernels import dispatch
from fastdnc.kernels import reference as ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = [(torch.float64, 1e-10), (torch.float32, None)]


def _gpu_backends(kernel, dtype):
    """The GPU backends to check; skips (instead of passing vacuously) when none is built here."""
    found = [b for b in backends_for(kernel, "cuda", dtype) if b != "torch"] if torch.cuda.is_available() else []
    if not found:
        pytest.skip(f"no triton or cuda backend of {kernel} is available on this GPU (needs the CUDA build)")
    return found


@pytest.mark.parametrize("dtype, tol", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1, 7, 5), (3, 64, 33), (2, 130, 257)], ids=str)
def test_two_sided_product(dtype, tol, shape):
    b, p, q = shape
    g = torch.Generator().manual_seed(0)
    o, v, i = (
        torch.randn(p, p, generator=g, dtype=torch.float64),
        torch.randn(b, p, q, generator=g, dtype=torch.float64),
        torch.randn(q, q, generator=g, dtype=torch.float64),
    )
    exact = ref.two_sided_product(o, v, i)
    torch_err = (
        (ref.two_sided_product(o.to("cuda", dtype), v.to("cuda", dtype), i.to("cuda", dtype)).double().cpu() - exact)
        .abs()
        .max()
    )
    for backend in _gpu_backends("two_sided_product", dtype):
        out = dispatch.two_sided_product(o.to("cuda", dtype), v.to("cuda", dtype), i.to("cuda", dtype), backend=backend)
        err = (out.double().cpu() - exact).abs().max()
        bound = tol * float(exact.abs().max()) if tol else 2 * float(torch_err) + 1e-6 * float(exact.abs().max())
        assert err <= bound, backend


@pytest.mark.parametrize("dtype, tol", DTYPES, ids=["f64", "f32"])
def test_gauss_newton_kernels(dtype, tol):
    g = torch.Generator().manual_seed(1)
    roots = torch.randn(300, 10, 40, generator=g, dtype=torch.float64)
    u = torch.randn(3, 300, 40, generator=g, dtype=torch.float64)
    x = torch.randn(24, 300, generator=g, dtype=torch.float64)
    for kernel, args, exact in (
        ("gn_sample_core", (roots, u), ref.gn_sample_core(roots, u)),
        ("gn_assemble", (x, roots, 0.5), ref.gn_assemble(x, roots, 0.5)),
    ):
        cuda_args = [a.to("cuda", dtype) if isinstance(a, torch.Tensor) else a for a in args]
        torch_err = (getattr(ref, kernel)(*cuda_args).double().cpu() - exact).abs().max()
        for backend in _gpu_backends(kernel, dtype):
            out = getattr(dispatch, kernel)(*cuda_args, backend=backend)
            err = (out.double().cpu() - exact).abs().max()
            bound = tol * float(exact.abs().max()) if tol else 2 * float(torch_err) + 1e-6 * float(exact.abs().max())
            assert err <= bound, (kernel, backend)


def test_layer_hessians_on_gpu_match_autograd():
    for act, loss in (("linear", "mse"), ("relu", "ce")):
        m = fd.DeepUFM(4, 5, 9, 3, activation=act, loss=loss, device="cuda", seed=2)
        for layer in (1, 2, 3):
            dense = R.dense_layer_hessian(m, layer)
            for backend in ["torch"] + _gpu_backends("gn_sample_core", torch.float64):
                H = fd.layer_hessian(m, layer, backend=backend)
                assert float((H.to_dense() - dense).norm() / dense.norm()) <= 1e-10, (act, loss, layer, backend)
