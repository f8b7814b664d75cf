"""The production Gauss–Newton pieces of :mod:`fastdnc.curvature.gauss_newton` (the R-op product and
the per-sample Jacobian roots) against the kernels' torch reference assembly."""

from __future__ import annotations

import pytest
import torch

from fastdnc.curvature import gauss_newton as gn
from fastdnc.curvature.output_losses import SoftmaxCrossEntropy
from fastdnc.kernels import reference as ref


def test_gn_product_matches_the_assembled_block():
    """The R-op product and the Jacobian-root assembly describe the same matrix."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, generator=g, dtype=torch.float64)
    w1 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    w2 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    mask = (torch.randn(5, 9, generator=g) > 0).double()
    logits = torch.randn(2, 9, generator=g, dtype=torch.float64)
    loss = SoftmaxCrossEntropy(logits, torch.eye(2, dtype=torch.float64)[:, torch.arange(9) % 2], torch.ones(9))
    upstream = [(w1, None), (w2, mask)]
    roots = gn.gn_jacobian_roots(upstream, loss, 3)
    dense = ref.gn_assemble(x, roots, 1 / 9)
    v = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    out = gn.gn_product(x, upstream, loss, v, 1 / 9)
    torch.testing.assert_close(out.reshape(2, -1), (dense @ v.reshape(2, -1).T).T)
    # the former probabilities argument still builds the same block, with a warning
    with pytest.warns(DeprecationWarning, match="OutputLoss"):
        old = gn.BatchedGaussNewton(x, upstream, torch.softmax(logits, dim=0), 2, 3, 9)
    new = gn.BatchedGaussNewton(x, upstream, loss, 2, 3, 9)
    torch.testing.assert_close(old.to_dense(), new.to_dense(), rtol=1e-13, atol=1e-15)
