r"""Randomised trace estimators: Hutchinson and Hutch++ (Meyer, Musco, Musco & Woodruff 2021).

Hutchinson: :math:`\operatorname{tr}\mathcal H \approx \frac1m\sum_i z_i^\top\mathcal H z_i` with
Rademacher :math:`z_i`; returns the estimate and its standard error. Hutch++ spends a third of
the budget on a sketch :math:`Q` of the range (exact trace of :math:`Q^\top\mathcal H Q`) and the
rest on Hutchinson for the deflated remainder, with error O(1/m) instead of O(1/√m) for operators
with a few large eigenvalues (the bulk + outliers spectra of this package).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._memory import require_vectors
from .apply import apply_operator


@dataclass
class TraceEstimate:
    value: float
    std_error: float
    num_matvecs: int


def _check_budget(op, num_matvecs: int, copies: int, what: str) -> None:
    """A positive int budget whose probes fit: ``copies`` blocks of ``num_matvecs`` vectors (probes,
    products, their integer draws and element-wise products)."""
    if isinstance(num_matvecs, bool) or not isinstance(num_matvecs, int) or num_matvecs < 1:
        raise ValueError(f"num_matvecs must be an int >= 1, got {num_matvecs!r}")
    require_vectors(op.shape[0], copies * num_matvecs, op.dtype, op.device, what, "fewer num_matvecs")


def _rademacher(size: int, m: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    z = torch.randint(0, 2, (size, m), generator=gen).to(dtype=like.dtype, device=like.device)
    return 2 * z - 1


def hutchinson_trace(op, num_matvecs: int = 100, seed: int = 0) -> TraceEstimate:
    """Hutchinson's estimate with ``num_matvecs`` Rademacher probes (one block product)."""
    _check_budget(op, num_matvecs, 5, "Hutchinson's trace estimate")
    like = torch.empty(0, dtype=op.dtype, device=op.device)
    z = _rademacher(op.shape[0], num_matvecs, torch.Generator().manual_seed(seed), like)
    samples = (z * apply_operator(op, z)).sum(0)
    se = float(samples.std() / num_matvecs**0.5) if num_matvecs > 1 else float("inf")
    return TraceEstimate(float(samples.mean()), se, num_matvecs)


def hutchpp_trace(op, num_matvecs: int = 99, seed: int = 0) -> TraceEstimate:
    """Hutch++ with ``num_matvecs`` operator columns in total (a multiple of 3 is best)."""
    _check_budget(op, num_matvecs, 3, "Hutch++")
    size = op.shape[0]
    m = max(num_matvecs // 3, 1)
    gen = torch.Generator().manual_seed(seed)
    like = torch.empty(0, dtype=op.dtype, device=op.device)
    s = _rademacher(size, m, gen, like)
    q, _ = torch.linalg.qr(apply_operator(op, s))
    g = _rademacher(size, max(num_matvecs - 2 * m, 1), gen, like)
    g = g - q @ (q.T @ g)
    top = float(torch.trace(q.T @ apply_operator(op, q)))
    samples = (g * apply_operator(op, g)).sum(0)
    se = float(samples.std() / samples.numel() ** 0.5) if samples.numel() > 1 else float("inf")
    return TraceEstimate(top + float(samples.mean()), se, m + q.shape[1] + g.shape[1])
