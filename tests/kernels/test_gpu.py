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


GN_CASES = [(300, 10, 40, 24, 3), (257, 100, 130, 7, 19)]  # (N, K, p, q, vectors): multi-tile, K > 64


def _gn_operands(n, kk, p, q, k):
    g = torch.Generator().manual_seed(1)
    roots = torch.randn(n, kk, p, generator=g, dtype=torch.float64)
    return (
        roots,
        torch.randn(k, n, p, generator=g, dtype=torch.float64),
        torch.randn(q, n, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize("tf32", [False, True], ids=["ieee", "tf32"])
@pytest.mark.parametrize("dtype, tol", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", GN_CASES, ids=str)
def test_gauss_newton_kernels(dtype, tol, case, tf32, monkeypatch):
    """Every GPU backend against the float64 reference: ≤ 1e-10 relative in float64; in float32 at
    most 2× torch's own error at the same precision (with TF32 on, torch's TF32 error)."""
    if tf32 and dtype == torch.float64:
        pytest.skip("TF32 concerns float32 only")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", tf32)
    roots, u, x = _gn_operands(*case)
    gram = x.T @ x
    for kernel, args, exact in (
        ("gn_sample_core", (roots, u), ref.gn_sample_core(roots, u)),
        ("gn_assemble", (x, roots[:, :, :12], 0.5), ref.gn_assemble(x, roots[:, :, :12], 0.5)),
        ("gn_gram", (roots[:60], gram[:60, :60], 0.5), None),
    ):
        cuda_args = [a.to("cuda", dtype) if isinstance(a, torch.Tensor) else a for a in args]
        if kernel == "gn_gram":
            m = 60 * roots.shape[1]
            exact = ref.gn_gram(*args, torch.zeros(m, m, dtype=torch.float64))
            cuda_args.append(torch.zeros(m, m, device="cuda", dtype=dtype))
        expected = getattr(ref, kernel)(*[a.clone() if isinstance(a, torch.Tensor) else a for a in cuda_args])
        torch_err = (expected.double().cpu() - exact).abs().max()
        for backend in _gpu_backends(kernel, dtype):
            fresh = [a.clone() if isinstance(a, torch.Tensor) else a for a in cuda_args]
            out = getattr(dispatch, kernel)(*fresh, backend=backend)
            err = (out.double().cpu() - exact).abs().max()
            bound = tol * float(exact.abs().max()) if tol else 2 * float(torch_err) + 1e-6 * float(exact.abs().max())
            assert err <= bound, (kernel, backend, float(err), bound)


def test_cuda_bindings_check_every_argument():
    from fastdnc.kernels import cuda

    if cuda.unavailable_reason() is not None:
        pytest.skip(cuda.unavailable_reason())
    roots, u = torch.zeros(4, 2, 3, device="cuda"), torch.zeros(1, 4, 3, device="cuda")
    core = cuda._cuda.gn_sample_core
    with pytest.raises(RuntimeError, match="u is Double"):
        core(roots, u.double())
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        core(roots, u.cpu())
    with pytest.raises(RuntimeError, match="must be contiguous"):
        core(torch.zeros(3, 2, 4, device="cuda").transpose(0, 2), u)
    with pytest.raises(RuntimeError, match=r"u must have shape \(k, 4, 3\)"):
        core(roots, torch.zeros(1, 5, 3, device="cuda"))
    with pytest.raises(RuntimeError, match="must have 3 dimensions"):
        core(roots[0], u)
    with pytest.raises(RuntimeError, match="shared memory.*backend='torch'"):
        core(torch.zeros(1, 4096, 4096, device="cuda"), torch.zeros(1, 1, 4096, device="cuda"))


def test_layer_hessians_on_gpu_match_autograd():
    for act, loss in (("linear", "mse"), ("relu", "ce")):
        m = fd.DeepUFM(4, 5, 9, 3, activation=act, loss=loss, device="cuda", seed=2)
        for layer in (1, 2, 3):
            dense = R.dense_layer_hessian(m, layer)
            for backend in ["torch"] + _gpu_backends("gn_sample_core", torch.float64):
                H = fd.layer_hessian(m, layer, backend=backend)
                assert float((H.to_dense() - dense).norm() / dense.norm()) <= 1e-10, (act, loss, layer, backend)
