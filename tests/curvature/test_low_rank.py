r"""Low-rank operators :math:`C\,\mathrm{diag}(w)\,C^\top` (fastdnc.curvature.low_rank): products,
diagonal, the exact non-zero eigenpairs and the rank against the dense matrix (float64), for more
columns than rows too, and the arguments it refuses."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdnc.curvature import LowRankOperator


def dense(c: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return c @ torch.diag(w) @ c.T


@settings(max_examples=25, deadline=None)
@given(p=st.integers(1, 12), m=st.integers(1, 15), seed=st.integers(0, 2**16))
def test_products_diagonal_and_eigenpairs_match_the_dense_matrix(p, m, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(p, m, generator=g, dtype=torch.float64)
    w = torch.rand(m, generator=g, dtype=torch.float64)
    op, a = LowRankOperator(c, w), dense(c, w)
    v = torch.randn(p, 3, generator=g, dtype=torch.float64)
    scale = float(a.abs().max()) or 1.0
    torch.testing.assert_close(op @ v, a @ v, rtol=1e-10, atol=1e-12 * scale)
    torch.testing.assert_close(op.diagonal(), a.diagonal(), rtol=1e-10, atol=1e-12 * scale)
    values, vectors = op.nonzero_eigh()
    r = values.numel()
    assert r == min(p, m)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(a)[-r:], rtol=1e-10, atol=1e-10 * scale)
    torch.testing.assert_close(a @ vectors, vectors * values, rtol=1e-9, atol=1e-9 * scale)
    assert op.rank() == int(torch.linalg.matrix_rank(a, rtol=1e-10))


def test_rank_counts_above_the_relative_tolerance():
    c = torch.eye(4, dtype=torch.float64)[:, :3]
    op = LowRankOperator(c, torch.tensor([1.0, 1e-6, 0.0], dtype=torch.float64))
    assert op.rank() == 2 and op.rank(rtol=1e-3) == 1
    assert LowRankOperator(torch.zeros(3, 2, dtype=torch.float64)).rank() == 0


@pytest.mark.parametrize(
    "columns, weights, match",
    [
        (torch.zeros(3), 1.0, "columns must be"),
        (torch.zeros(3, 2), torch.tensor([1.0, -1.0]), "non-negative"),
    ],
)
def test_bad_arguments_are_refused(columns, weights, match):
    with pytest.raises(ValueError, match=match):
        LowRankOperator(columns, weights)
