"""The production Gauss–Newton pieces of :mod:`fastdnc.curvature.gauss_newton` (the R-op product and
the per-sample Jacobian roots) against the kernels' torch reference assembly."""

from __future__ import annotations

import torch

from fastdnc.curvature import gauss_newton as gn
from fastdnc.kernels import reference as ref


def test_gn_product_matches_the_assembled_block():
    """The R-op product and the Jacobian-root assembly describe the same matrix."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, generator=g, dtype=torch.float64)
    w1 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    w2 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    mask = (torch.randn(5, 9, generator=g) > 0).double()
    probs = torch.softmax(torch.randn(2, 9, generator=g, dtype=torch.float64), dim=0)
    upstream = [(w1, None), (w2, mask)]
    roots = gn.gn_jacobian_roots(upstream, probs, 2, 3, 9, x)
    dense = ref.gn_assemble(x, roots, 1 / 9)
    v = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    out = gn.gn_product(x, upstream, probs, v, 1 / 9)
    torch.testing.assert_close(out.reshape(2, -1), (dense @ v.reshape(2, -1).T).T)
