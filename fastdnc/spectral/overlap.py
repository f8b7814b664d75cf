r"""Outliers and subspace overlaps.

* :func:`outliers`: the number of outlier eigenvalues, at the largest ratio gap
  :math:`\lambda_i/\lambda_{i+1}` among the top ones, and the bulk edge below it. The gap into the
  numerical null space is a candidate only when the caller bounds the count (``max_count``, e.g.
  2K²): without a bound it would make the count the rank of any rank-deficient spectrum.
* :func:`gradient_overlap`: Gur-Ari et al.'s :math:`\|P_{\mathrm{top}}\,g\|^2/\|g\|^2` of a
  gradient with the span of the top eigenvectors (1: the gradient lives in the outlier space).
* :func:`subspace_overlap`: :math:`\|U^\top V\|_F^2/k`, the mean squared cosine of the principal
  angles between two k-dimensional subspaces (e.g. the top eigenspaces at two training times).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Outliers:
    """``count`` outliers above the ``bulk_edge``; ``gap_ratio`` = λ_count / λ_{count+1}, infinite
    when the split is at the numerical null space (``null_space``: no bulk, the rest is zero)."""

    count: int
    bulk_edge: float
    gap_ratio: float
    null_space: bool = False


SINGLE_CLUSTER = 1.0 + 1e-6  # ratios below this are one degenerate level (an exact DNC point)


def outliers(
    eigenvalues: torch.Tensor, max_count: int | None = None, floor: float = 0.0, rtol: float = 1e-10
) -> Outliers:
    """Split descending ``eigenvalues`` into outliers and bulk at the largest ratio gap among the
    first ``max_count``. Values at most ``max(floor, rtol · λ_max)`` are the numerical null space and
    no gap inside it counts. The gap into it (an infinite ratio) is a candidate only with
    ``max_count`` (a caller that knows how many outliers to expect, e.g. 2K²); without it the split is
    among the non-null eigenvalues, and only when they are one degenerate level (every ratio below
    1 + 1e-6, an exact DNC point) is the count their number."""
    ev = torch.sort(eigenvalues.detach().flatten(), descending=True).values
    m = min(ev.numel() - 1, max_count or ev.numel() - 1)
    if m < 1:
        raise ValueError("outliers needs at least two eigenvalues")
    floor = max(floor, rtol * float(ev[0]))
    top, nxt = ev[:m], ev[1 : m + 1]
    into_null = (top > floor) & (nxt <= floor)
    ratio = torch.where(
        nxt > floor, top / nxt.clamp_min(torch.finfo(ev.dtype).tiny), torch.full_like(top, float("inf"))
    )
    ratio = torch.where(top > floor, ratio, torch.zeros_like(ratio))
    if max_count is None and bool(into_null.any()):
        inside = torch.where(into_null, torch.zeros_like(ratio), ratio)
        if float(inside.max()) >= SINGLE_CLUSTER:
            ratio = inside
    i = int(torch.argmax(ratio))
    return Outliers(i + 1, float(ev[i + 1]), float(ratio[i]), bool(into_null[i]))


def gradient_overlap(gradient: torch.Tensor, vectors: torch.Tensor) -> float:
    """:math:`\\|P g\\|^2 / \\|g\\|^2` for the span of the columns of ``vectors`` (P × k)."""
    q, _ = torch.linalg.qr(vectors)
    g = gradient.reshape(-1)
    return float((q.T @ g).square().sum() / g.square().sum())


def subspace_overlap(u: torch.Tensor, v: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between span(u) and span(v) (P × k each)."""
    qu, _ = torch.linalg.qr(u)
    qv, _ = torch.linalg.qr(v)
    return float((qu.T @ qv).square().sum() / min(qu.shape[1], qv.shape[1]))
