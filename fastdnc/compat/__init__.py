"""One-line swaps for the users of curvlinops, PyHessian and hessian-eigenthings.

Each submodule has the peer's public names, argument names and defaults and returns what the peer
returns, with fastdnc's exact operators (:class:`~fastdnc.HessianOperator`,
:class:`~fastdnc.GGNOperator`) and spectral methods (:func:`~fastdnc.lanczos`, SLQ, Hutch++)
underneath, so existing code runs after changing one import::

    from fastdnc.compat.curvlinops import HessianLinearOperator      # was: from curvlinops import ...
    from fastdnc.compat.pyhessian import hessian                      # was: from pyhessian import hessian
    from fastdnc.compat.hessian_eigenthings import compute_hessian_eigenthings

Where a result differs in meaning (exact instead of iterative values, a one-element trace list),
the function's docstring says so.
"""

from . import curvlinops, hessian_eigenthings, pyhessian

__all__ = ["curvlinops", "hessian_eigenthings", "pyhessian"]
