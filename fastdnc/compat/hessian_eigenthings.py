"""hessian-eigenthings' classic entry point ``compute_hessian_eigenthings`` (the 0.x API of
github.com/noahgolmant/pytorch-hessian-eigenthings, the one most published code calls).

``compute_hessian_eigenthings(model, dataloader, loss, num_eigenthings=10, full_dataset=True,
mode="power_iter", device="cuda", fp16=False, max_possible_gpu_samples=2**16, **kwargs)`` returns
``(eigenvals, eigenvecs)`` as NumPy arrays: the ``num_eigenthings`` eigenvalues of largest magnitude
in decreasing magnitude (the order of the package's deflated power iteration) and the eigenvectors
as rows (num_eigenthings × P), flattened in ``model.parameters()`` order.

Differences: the batches are weighted by their sizes (the Hessian of the full-data mean loss; the
peer averages batch losses with equal weights, which differs when the last batch is smaller); both
modes run :func:`fastdnc.lanczos` to its tolerance (1e-10 relative in float64)
instead of stochastic power iteration or 20 Lanczos steps, so the values are exact where the peer's
are estimates; ``full_dataset=False`` uses the first batch only (the peer samples one per
product); ``device``, ``fp16`` and ``max_possible_gpu_samples`` are accepted and ignored (the data
follow the model's device; products are in the model's dtype). ``kwargs`` such as
``max_possible_gpu_samples`` or ``power_iter_steps`` are accepted; ``tol`` is passed to Lanczos.
The installed ``hessian-eigenthings`` 1.x replaced this function by operator classes; the classic
signature is kept here for the code written against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..curvature.generic import HessianOperator
from ..spectral.lanczos import lanczos


def compute_hessian_eigenthings(
    model: torch.nn.Module,
    dataloader: Any,
    loss: Any,
    num_eigenthings: int = 10,
    full_dataset: bool = True,
    mode: str = "power_iter",
    device: str = "cuda",
    fp16: bool = False,
    max_possible_gpu_samples: int = 2**16,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``num_eigenthings`` Hessian eigenpairs by magnitude (see the module docstring)."""
    if mode not in ("power_iter", "lanczos"):
        raise ValueError(f"Unsupported mode {mode} (must be power_iter or lanczos)")
    batches = list(dataloader)
    if not batches:
        raise ValueError("the dataloader is empty")
    op = HessianOperator(model, loss, batches if full_dataset else batches[:1])
    res = lanczos(op, k=num_eigenthings, which="LM", **({"tol": kwargs["tol"]} if "tol" in kwargs else {}))
    order = torch.argsort(res.eigenvalues.abs(), descending=True)
    vals = res.eigenvalues[order].cpu().numpy()
    vecs = res.eigenvectors[:, order].T.cpu().numpy()
    return vals, vecs
