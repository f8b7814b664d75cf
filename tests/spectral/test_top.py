"""``fd.top_eigenpairs``: the route it takes for each kind of input (a layered model: Lanczos on the
Hessian warm-started from the GGN's exact top; a Gauss–Newton operator: its sample-space Gram, no
product; any other operator: plain Lanczos), each checked by float64 residuals ‖Hv − λv‖."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd


@pytest.fixture(scope="module")
def trained():
    m = fd.DeepUFM(4, 5, 12, 4, activation="relu", seed=0)
    fd.train(m, 3000, 0.1, progress=False)
    return m


def residual(op, res) -> float:
    v = res.eigenvectors
    return float((op @ v - v * res.eigenvalues).norm(dim=0).max())


def test_a_layered_model_is_warm_started_from_its_ggn(trained):
    H = fd.hessian(trained, decay=True)
    cold = fd.lanczos(H, k=16)
    warm = fd.top_eigenpairs(trained, 16)
    assert warm.converged
    torch.testing.assert_close(warm.eigenvalues, cold.eigenvalues, rtol=0, atol=1e-9)
    assert residual(H, warm) <= 1e-8 * float(cold.eigenvalues.abs().max())


def test_a_gauss_newton_operator_takes_its_gram_and_no_product(trained):
    gn = fd.ggn(trained, decay=True)
    via_gram = fd.top_eigenpairs(gn, 5)
    assert via_gram.num_matvecs == 0 and via_gram.converged
    torch.testing.assert_close(via_gram.eigenvalues, fd.lanczos(gn, k=5).eigenvalues, rtol=0, atol=1e-9)
    assert residual(gn, via_gram) <= 1e-8


def test_other_operators_take_lanczos_and_other_inputs_are_refused(trained):
    H = fd.hessian(trained, decay=True)
    res = fd.top_eigenpairs(H, 4, tol=1e-10)
    assert res.num_matvecs > 0 and res.converged
    torch.testing.assert_close(res.eigenvalues, torch.linalg.eigvalsh(H.to_dense()).flip(0)[:4], rtol=0, atol=1e-9)
    with pytest.raises(TypeError, match="DeepUFM, an MLPHead or an operator"):
        fd.top_eigenpairs(H.to_dense(), 3)
