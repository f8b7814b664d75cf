r"""The spectrum of an operator by the cheapest exact route: ``fd.spectral.spectrum(op, top=…)``.

* **all eigenvalues** when the operator is small enough to be exact cheaply: P ≤ :data:`DENSE_LIMIT`
  (its own ``eigh``: exact from Kronecker factors, the sample-space Gram of a Gauss–Newton block when
  that is smaller, or the dense matrix), or a Gauss–Newton block whose sample-space Gram (after
  grouping identical samples) has at most :data:`DENSE_LIMIT` rows;
* else the ``top`` largest by :func:`~fastdnc.spectral.lanczos.lanczos` (warm-started from ``start``
  when given: a block, or an operator with exact eigenpairs).

One limit for the whole package (the analyses, ``fastdnc spectrum``, the presets): 6000 unknowns,
where a dense symmetric eigendecomposition takes about a minute on two cores
(:mod:`fastdnc._memory` warns above 4096 with its estimate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._memory import DENSE_LIMIT
from ..curvature.eigenvectors import eigenvector_view
from ..curvature.gram import GramOperator
from .lanczos import lanczos


@dataclass
class Spectrum:
    """``eigenvalues`` in descending order (all of them when ``complete``, else the top), the
    eigenvectors of the first ``vectors.shape[1]`` of them, how they were computed, and the operator
    products spent (0 for the factor, Gram and dense routes)."""

    eigenvalues: torch.Tensor
    vectors: torch.Tensor
    method: str
    complete: bool
    products: int = 0


def spectrum(op, top: int, dense_limit: int = DENSE_LIMIT, start=None, tol: float | None = None) -> Spectrum:
    """The spectrum of the symmetric ``op`` (see the module docstring), with the eigenvectors of its
    ``top`` largest eigenvalues."""
    size = op.size
    top = max(1, min(top, size))
    gram = None
    m = op.gram_size() if isinstance(op, GramOperator) else None
    if size > dense_limit and m is not None and m <= 4 * dense_limit:
        gram = op.sample_gram()
        gram = gram if gram is not None and gram.dim <= dense_limit else None
    if size <= dense_limit or gram is not None:
        values, vecs = gram.eigh() if gram is not None else op.eigh()
        view = eigenvector_view(values, vecs)
        method = f"exact ({view.route}, {gram.dim} rows)" if gram is not None else f"exact ({view.route})"
        return Spectrum(values.flip(0), view.top(min(top, view.rank)), method, True)
    res = lanczos(op, k=top, start=start, tol=tol)
    how = "warm-started Lanczos" if start is not None else "Lanczos"
    return Spectrum(res.eigenvalues, res.eigenvectors, f"top {top} ({how})", False, res.num_matvecs)
