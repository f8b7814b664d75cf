"""``fd.spectral.spectrum``: all eigenvalues by the cheapest exact route (Kronecker factors, the
sample-space Gram, the dense matrix) up to the dense limit, else the top by Lanczos; each against the
dense eigendecomposition in float64."""

from __future__ import annotations

import torch

import fastdnc as fd
from fastdnc import theory
from fastdnc.spectral.exact import spectrum


def dense_values(op) -> torch.Tensor:
    return torch.linalg.eigvalsh(op.to_dense()).flip(0)


def check_complete(res, op, top: int) -> None:
    assert res.complete and res.products == 0 and res.eigenvalues.shape == (op.size,)
    torch.testing.assert_close(res.eigenvalues, dense_values(op), rtol=1e-10, atol=1e-12)
    v = res.vectors
    assert v.shape[1] <= top
    assert float((op @ v - v * res.eigenvalues[: v.shape[1]]).norm(dim=0).max()) <= 1e-9


def test_kronecker_factors_and_the_dense_route_below_the_limit():
    m = theory.optimum_model(3, 4, 6, 3, 5e-3)  # linear MSE: Kronecker layer blocks
    res = spectrum(fd.layer_hessian(m, 2), top=5)
    assert res.method == "exact (Kronecker factors)"
    check_complete(res, fd.layer_hessian(m, 2), 5)
    full = fd.hessian(m, decay=True)
    res = spectrum(full, top=5)
    assert res.method == "exact (dense)"
    check_complete(res, full, 5)


def test_the_gram_route_above_the_dense_limit():
    """P = 256 above a limit of 130, N·K = 480 within four times it, and the collapsed block's Gram
    has 16 rows after grouping."""
    m = theory.optimum_model(4, 30, 16, 3, 5e-3, activation="relu")
    op = fd.layer_hessian(m, 2)
    res = spectrum(op, top=16, dense_limit=130)
    assert res.method.startswith("exact (sample-space Gram") and res.method.endswith("16 rows)")
    check_complete(res, op, 16)


def test_lanczos_above_the_limit_without_a_small_gram():
    m = fd.DeepUFM(3, 4, 8, 3, activation="relu", seed=0)
    op = fd.hessian(m, decay=True)
    res = spectrum(op, top=4, dense_limit=50, tol=1e-10)
    assert not res.complete and res.method == "top 4 (Lanczos)" and res.products > 0
    torch.testing.assert_close(res.eigenvalues, dense_values(op)[:4], rtol=1e-9, atol=1e-12)
    warm = spectrum(op, top=4, dense_limit=50, tol=1e-10, start=fd.ggn(m, decay=True))
    assert warm.method == "top 4 (warm-started Lanczos)"
    torch.testing.assert_close(warm.eigenvalues, res.eigenvalues, rtol=1e-9, atol=1e-12)
