"""The Krylov basis of Lanczos (fastdnc.spectral.krylov): H Q_a = Q C holds exactly through growth,
extension and thick restarts; Q stays orthonormal; rank-revealing orthonormalisation."""

from __future__ import annotations

import pytest
import torch

from fastdnc.spectral.krylov import KrylovBasis, orthonormal, project_out

EPS = 1e-12


def symmetric(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a + a.T


def check_relation(a: torch.Tensor, basis: KrylovBasis) -> None:
    q = basis.q[:, : basis.num_columns]
    applied = basis.applied()
    c = basis.coefficients[: basis.num_columns, : basis.num_applied]
    torch.testing.assert_close(a @ applied, q @ c, rtol=0, atol=EPS * float(a.abs().max()) * 100)
    torch.testing.assert_close(q.T @ q, torch.eye(q.shape[1], dtype=q.dtype), rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", [1, 2, 3])
def test_the_relation_holds_through_extensions_growth_and_restarts(block):
    a = symmetric(40)
    first = orthonormal(torch.randn(40, block, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    basis = KrylovBasis(first, max_basis=4, b=block)  # small storage: extensions must grow it
    for _ in range(6):
        basis.extend(a @ basis.pending(), block)
        check_relation(a, basis)
        assert basis.num_pending == block
    assert basis.projection().shape == (basis.num_applied, basis.num_applied)
    theta, s = basis.ritz()
    residuals = basis.residuals(s)
    x = basis.applied() @ s
    torch.testing.assert_close(torch.linalg.vector_norm(a @ x - x * theta, dim=0), residuals, rtol=1e-8, atol=1e-10)
    keep = torch.argsort(theta)[-3:]
    basis.restart(theta, s, keep)
    assert basis.num_applied == 3
    check_relation(a, basis)
    basis.extend(a @ basis.pending(), block)
    check_relation(a, basis)


def test_an_invariant_subspace_ends_the_basis():
    a = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    first = torch.zeros(10, 1, dtype=torch.float64)
    first[:2] = 0.5**0.5  # in the span of e_1, e_2: invariant after one step
    basis = KrylovBasis(first, 10, 1)
    basis.extend(a @ basis.pending(), 1)
    basis.extend(a @ basis.pending(), 1)
    assert basis.num_pending == 0 and basis.num_applied == 2
    check_relation(a, basis)


def test_orthonormal_drops_only_rounding_noise_and_project_out_leaves_nothing():
    g = torch.Generator().manual_seed(3)
    u = torch.randn(30, 3, generator=g, dtype=torch.float64)
    v = torch.cat([u, u @ torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)], dim=1)  # rank 3
    q, r = orthonormal(v)
    assert q.shape == (30, 3)
    torch.testing.assert_close(q @ r, v, rtol=0, atol=1e-12)
    w = torch.randn(30, 2, generator=g, dtype=torch.float64)
    rest, coef = project_out(w, q)
    assert float((q.T @ rest).abs().max()) < 1e-14
    torch.testing.assert_close(rest + q @ coef, w, rtol=0, atol=1e-13)
