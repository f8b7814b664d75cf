"""Kronecker operators: factor forms, exact spectra, lazy eigenvectors, solve, sums, algebra."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc.curvature import DenseOperator, Factor, KroneckerOperator, KroneckerSum


def spd(n, seed, rank=None):
    """A random (rank × n) matrix R; RᵀR is symmetric positive semi-definite."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank or n, n, generator=g, dtype=torch.float64)


FORMS = ["dense", "gram", "lowrank", "identity"]


def factor(form: str, n: int, seed: int) -> tuple[Factor, torch.Tensor]:
    if form == "identity":
        f = Factor.identity(n, 0.7)
    elif form == "dense":
        r = spd(n, seed)
        f = Factor.dense(r.T @ r)
    else:
        f = Factor.gram(spd(n, seed, rank=n + 2 if form == "gram" else 2), 0.3)
    return f, f.to_dense()


@pytest.mark.parametrize("out_form", FORMS)
@pytest.mark.parametrize("in_form", FORMS)
def test_products_spectra_and_reductions(out_form, in_form):
    (fo, o), (fi, i) = factor(out_form, 5, 1), factor(in_form, 4, 2)
    op = KroneckerOperator(fo, fi, scale=1.5, shift=0.25)
    dense = 1.5 * torch.kron(o, i) + 0.25 * torch.eye(20, dtype=torch.float64)
    v = torch.randn(20, 3, dtype=torch.float64)
    torch.testing.assert_close(op @ v, dense @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.to_dense(), dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.diagonal(), torch.diagonal(dense), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.trace(), torch.trace(dense), rtol=1e-12, atol=1e-12)
    evals, vecs = op.eigh()
    torch.testing.assert_close(evals, torch.linalg.eigvalsh(dense), rtol=1e-10, atol=1e-10)
    u = vecs.to_dense()
    torch.testing.assert_close(u.T @ u, torch.eye(20, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(u @ torch.diag(evals) @ u.T, dense, rtol=1e-10, atol=1e-10)
    c = torch.randn(20, dtype=torch.float64)
    torch.testing.assert_close(vecs @ c, u @ c)
    torch.testing.assert_close(vecs.T @ c, u.T @ c)
    x = op.solve(v, damping=0.1)
    torch.testing.assert_close((dense + 0.1 * torch.eye(20, dtype=torch.float64)) @ x, v, rtol=1e-9, atol=1e-9)


def test_scaling_and_shift_stay_exact_and_structured():
    op = KroneckerOperator(torch.diag(torch.tensor([1.0, 2.0])), torch.diag(torch.tensor([3.0, 4.0])))
    assert isinstance(2 * op, KroneckerOperator) and isinstance(op.with_shift(1.0), KroneckerOperator)
    assert (2 * op).eigvalsh().tolist() == [6.0, 8.0, 12.0, 16.0]
    assert op.with_shift(1.0).eigvalsh().tolist() == [4.0, 5.0, 7.0, 9.0]


def test_large_exact_spectrum_without_dense_matrix():
    """d = 300: 90 000 eigenvalues from two 300×300 factor problems; spot-check Rayleigh quotients."""
    d, k = 300, 10
    a = spd(d, 3, rank=k)
    h = spd(d, 4, rank=50).T
    op = KroneckerOperator(Factor.gram(a), Factor.gram(h.T, 1 / 50))
    evals, vecs = op.eigh()
    assert evals.shape == (d * d,)
    assert int((evals > 1e-9 * float(evals[-1])).sum()) == k * 50  # rank K · rank(H)
    top = vecs.top(5)
    for j in range(5):
        torch.testing.assert_close(op @ top[:, j], evals[-1 - j] * top[:, j], rtol=1e-9, atol=1e-9)


def test_kronecker_sum():
    terms = [(spd(3, s).T @ spd(3, s), spd(4, s + 9).T @ spd(4, s + 9)) for s in range(3)]
    op = KroneckerSum(terms)
    dense = sum(torch.kron(o, i) for o, i in terms)
    v = torch.randn(12, 2, dtype=torch.float64)
    torch.testing.assert_close(op @ v, dense @ v)
    torch.testing.assert_close(op.diagonal(), torch.diagonal(dense))
    torch.testing.assert_close(op.trace(), torch.trace(dense))
    torch.testing.assert_close(op.eigvalsh(), torch.linalg.eigvalsh(dense))
    with pytest.raises(ValueError, match="one shape"):
        KroneckerSum([terms[0], (torch.eye(2, dtype=torch.float64), torch.eye(6, dtype=torch.float64))])


def test_operator_algebra_and_scipy():
    a = spd(4, 1)
    a = a.T @ a
    b = torch.diag(torch.arange(1.0, 5.0, dtype=torch.float64))
    A, B = DenseOperator(a), DenseOperator(b)
    v = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close((A + B) @ v, (a + b) @ v)
    torch.testing.assert_close((A - 2 * B) @ v, (a - 2 * b) @ v)
    torch.testing.assert_close((-A) @ v, -a @ v)
    torch.testing.assert_close((A @ B) @ v, a @ b @ v)
    torch.testing.assert_close((A @ B).adjoint() @ v, b @ a @ v)
    torch.testing.assert_close((A @ B).T.to_dense(), (a @ b).T)
    assert (A + B).symmetric and not (A @ B).symmetric
    sp = (A + B).to_scipy()
    torch.testing.assert_close(torch.from_numpy(sp @ v.numpy()), (a + b) @ v)
    torch.testing.assert_close(torch.from_numpy(sp.matmat(torch.eye(4, dtype=torch.float64).numpy())), a + b)
    with pytest.raises(ValueError, match="cannot combine"):
        A + DenseOperator(torch.eye(3, dtype=torch.float64))


def test_scipy_eigsh_on_a_layer_hessian():
    from scipy.sparse.linalg import eigsh

    m = fd.DeepUFM(3, 3, 6, 3, activation="relu", seed=1)
    H = fd.layer_hessian(m, 2)
    top = eigsh(H.to_scipy(), k=3, which="LA", return_eigenvectors=False)
    ref = torch.linalg.eigvalsh(H.to_dense())[-3:]
    torch.testing.assert_close(torch.tensor(sorted(top), dtype=torch.float64), ref, rtol=1e-10, atol=1e-12)


def test_singular_solve_is_refused():
    op = KroneckerOperator(Factor.gram(torch.ones(1, 3, dtype=torch.float64)), torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="singular"):
        op.solve(torch.ones(6, dtype=torch.float64))
    x = op.solve(torch.ones(6, dtype=torch.float64), damping=1.0)
    torch.testing.assert_close((op.with_shift(1.0)) @ x, torch.ones(6, dtype=torch.float64))
