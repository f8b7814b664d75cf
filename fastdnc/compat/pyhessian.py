"""PyHessian's ``hessian`` class: ``hessian(model, criterion, data=None, dataloader=None, cuda=True)``
with ``eigenvalues``, ``trace`` and ``density``, returning PyHessian's types.

Differences, each in favour of exactness:

* ``eigenvalues(maxIter=100, tol=1e-3, top_n=1)`` returns the ``top_n`` eigenvalues of largest
  magnitude (PyHessian's power iteration converges to those) and their eigenvectors, as
  ``(list of floats, list of lists of parameter-shaped tensors)``, computed by
  :func:`fastdnc.lanczos` to its own tolerance (1e-10 relative in float64, 1e-5 in float32)
  instead of PyHessian's relative change ``tol``, as many products as that takes (``maxIter`` and
  ``tol`` are accepted and not used).
* ``trace(maxIter=100, tol=1e-3)`` returns a one-element list: the exact trace (from the dense
  diagonal) when the model has at most 4096 parameters, else a Hutch++ estimate with ``maxIter``
  products. PyHessian returns its Hutchinson samples; ``np.mean`` of either list is the estimate.
* ``density(iter=100, n_v=1)`` returns PyHessian's ``(eigen_list_full, weight_list_full)``: for each
  of ``n_v`` Rademacher starts, the nodes and weights of ``iter``-step Lanczos quadrature with full
  reorthogonalisation. It works on current torch, where PyHessian's own calls the removed
  ``torch.eig``.
* ``cuda`` is accepted for compatibility; the data follow the model's device.

As in PyHessian, the model is put in eval mode, ``data`` is one ``(inputs, targets)`` batch and
``dataloader`` a sequence of batches weighted by their sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..curvature.generic import HessianOperator
from ..curvature.layout import split_flat
from ..spectral.density import tridiagonal_quadrature
from ..spectral.lanczos import lanczos
from ..spectral.trace import hutchpp_trace

EXACT_TRACE_LIMIT = 4096


class hessian:  # noqa: N801 - PyHessian's class name
    """The Hessian of ``criterion`` over ``data`` or ``dataloader`` w.r.t. every parameter that
    requires grad (see the module docstring)."""

    def __init__(
        self, model: torch.nn.Module, criterion, data: Any = None, dataloader: Any = None, cuda: bool = True
    ) -> None:
        if (data is None) == (dataloader is None):
            raise ValueError("give exactly one of data (one batch) and dataloader")
        self.model = model.eval()
        self.criterion = criterion
        self.full_dataset = data is None
        self.device = "cuda" if cuda else "cpu"
        self.params = [p for p in model.parameters() if p.requires_grad]
        batches = list(dataloader) if data is None else [tuple(data)]
        self.operator = HessianOperator(model, criterion, batches, params=self.params)

    def _as_params(self, column: torch.Tensor) -> list[torch.Tensor]:
        return [t.clone() for t in split_flat(column, [p.shape for p in self.params])]

    def eigenvalues(self, maxIter: int = 100, tol: float = 1e-3, top_n: int = 1):  # noqa: N803
        """The ``top_n`` eigenvalues of largest magnitude and their eigenvectors (PyHessian's types)."""
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        res = lanczos(self.operator, k=top_n, which="LM")
        order = torch.argsort(res.eigenvalues.abs(), descending=True)
        return ([float(res.eigenvalues[i]) for i in order], [self._as_params(res.eigenvectors[:, i]) for i in order])

    def trace(self, maxIter: int = 100, tol: float = 1e-3) -> list[float]:  # noqa: N803
        """The trace as a one-element list (exact up to 4096 parameters, else Hutch++)."""
        if self.operator.size <= EXACT_TRACE_LIMIT:
            return [float(self.operator.trace())]
        return [hutchpp_trace(self.operator, num_matvecs=maxIter).value]

    def density(self, iter: int = 100, n_v: int = 1):  # noqa: A002 - PyHessian's argument name
        """SLQ nodes and weights of ``n_v`` runs of ``iter`` Lanczos steps (PyHessian's lists)."""
        eigen_list_full, weight_list_full = [], []
        op = self.operator
        for run in range(n_v):
            gen = torch.Generator().manual_seed(run)
            v = (torch.randint(0, 2, (op.size,), generator=gen) * 2 - 1).to(dtype=op.dtype, device=op.device)
            nodes, weights = tridiagonal_quadrature(op, v / v.norm(), min(iter, op.size))
            eigen_list_full.append(list(np.asarray(nodes.cpu())))
            weight_list_full.append(list(np.asarray(weights.cpu())))
        return eigen_list_full, weight_list_full
