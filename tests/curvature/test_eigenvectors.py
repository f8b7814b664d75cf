"""One eigenvector view (fastdnc.curvature.eigenvectors) for the Kronecker, Gram and dense routes:
the same ``top``, ``columns``, ``rank`` and ``route`` whichever route computed them, against
``torch.linalg.eigh`` of the dense matrix (float64)."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc.curvature import DenseEigenvectors, DenseOperator, EigenvectorView, KroneckerOperator, eigenvector_view

G = torch.Generator().manual_seed(0)


def spd(n: int) -> torch.Tensor:
    a = torch.randn(n, n, generator=G, dtype=torch.float64)
    return a @ a.T + torch.diag(torch.arange(1.0, n + 1, dtype=torch.float64))


def kronecker() -> KroneckerOperator:
    return KroneckerOperator(spd(3), spd(4))


def gauss_newton():
    x = torch.randn(6, 12, generator=G, dtype=torch.float64)
    head = fd.MLPHead(x, torch.arange(12) % 3, 5, 3, loss="ce", seed=1)
    return fd.layer_hessian(head, layer=2, decay=False)  # 25 unknowns; CE's Λ has rank K − 1: rank ≤ 24


ROUTES = {
    "Kronecker factors": kronecker,
    "dense": lambda: DenseOperator(spd(7)),
    "sample-space Gram": lambda: gauss_newton(),
}


@pytest.fixture(params=list(ROUTES))
def route(request):
    return request.param, ROUTES[request.param]()


def aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|cosine| of matching columns."""
    return (a * b).sum(0).abs() / (a.norm(dim=0) * b.norm(dim=0))


def test_every_route_gives_the_same_view(route):
    name, op = route
    method = "gram" if name == "sample-space Gram" else "auto"
    values, vecs = op.eigh(method) if name != "Kronecker factors" else op.eigh()
    view = eigenvector_view(values, vecs)
    assert isinstance(view, EigenvectorView) and view.route == name
    dense_values, dense_vectors = torch.linalg.eigh(op.to_dense())
    torch.testing.assert_close(values, dense_values, rtol=1e-10, atol=1e-10 * float(dense_values.abs().max()))
    k = min(3, view.rank)
    assert view.top(k).shape == (op.size, k)
    gaps = (dense_values[-k - 1 :].diff().abs() > 1e-6 * float(dense_values.abs().max())).all()
    assert gaps  # distinct top eigenvalues, so each vector is unique up to sign
    torch.testing.assert_close(aligned(view.top(k), dense_vectors[:, -k:].flip(1)), torch.ones(k, dtype=values.dtype))
    last = op.size - 1
    torch.testing.assert_close(view.columns([last]), view.top(1))
    torch.testing.assert_close(view[:, [last]], view.top(1))
    with pytest.raises(ValueError, match="top"):
        view.top(view.rank + 1)


def test_the_gram_view_knows_its_rank():
    op = gauss_newton()
    view = eigenvector_view(*op.eigh("gram"))
    assert view.rank < op.size and view.top(view.rank).shape == (op.size, view.rank)


def test_a_dense_view_puts_unsorted_values_in_ascending_order():
    vectors = torch.eye(3, dtype=torch.float64)
    view = eigenvector_view(torch.tensor([2.0, 0.0, 1.0]), vectors)
    assert isinstance(view, DenseEigenvectors) and view.rank == 3
    torch.testing.assert_close(view.top(2), vectors[:, [0, 2]])


def test_what_is_not_a_view_is_named():
    with pytest.raises(TypeError, match="not an eigenvector view: list"):
        eigenvector_view(torch.zeros(2), [[1.0, 0.0], [0.0, 1.0]])
