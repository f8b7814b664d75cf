r"""Spectral density by stochastic Lanczos quadrature (SLQ), Papyan-style: ``fd.spectral_density``.

For each of ``num_probes`` random unit vectors :math:`v`, m steps of Lanczos (with full
reorthogonalisation) give a tridiagonal :math:`T = U\,\mathrm{diag}(\theta)\,U^\top`; the
quadrature nodes are :math:`\theta_j` and the weights are the **squared first components**
:math:`\tau_j = U_{1j}^2` (they sum to 1: the density integrates to 1). The density is the
average over probes of :math:`\sum_j \tau_j\,\mathcal N(x; \theta_j, \sigma^2)`, on a grid, or of
:math:`\log_{10}` of the positive nodes with ``log=True`` (the mass of non-positive nodes is
reported separately).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._memory import require_vectors
from .._threads import intra_op_threads, threads_for
from .apply import Meter, apply_operator


@dataclass
class SpectralDensity:
    """``grid`` and ``density`` (same length; ``∫ density = 1`` up to the mass outside the grid,
    or, with ``log``, up to ``nonpositive_mass``), the raw quadrature ``nodes`` and ``weights``
    (probes × steps), and the broadening ``sigma``."""

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    log: bool
    nonpositive_mass: float


def tridiagonal_quadrature(op, v: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of m-step Lanczos quadrature from the unit vector ``v``."""
    size = v.shape[0]
    steps = min(steps, size)
    q = torch.empty(size, steps, dtype=v.dtype, device=v.device)
    alpha = torch.zeros(steps, dtype=v.dtype, device=v.device)
    beta = torch.zeros(max(steps - 1, 0), dtype=v.dtype, device=v.device)
    q[:, 0] = v / v.norm()
    m = steps
    for j in range(steps):
        w = apply_operator(op, q[:, j : j + 1])[:, 0]
        alpha[j] = q[:, j] @ w
        w = w - q[:, : j + 1] @ (q[:, : j + 1].T @ w)
        w = w - q[:, : j + 1] @ (q[:, : j + 1].T @ w)  # full reorthogonalisation, twice
        if j + 1 == steps:
            break
        nb = w.norm()
        if nb <= 1e-12 * max(float(alpha[: j + 1].abs().max()), 1e-300):  # invariant subspace: exact
            m = j + 1
            break
        beta[j] = nb
        q[:, j + 1] = w / nb
    t = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
    theta, u = torch.linalg.eigh(t)
    return theta, u[0].square()


def spectral_density(
    op,
    num_probes: int = 8,
    steps: int = 80,
    *,
    grid: torch.Tensor | int = 1000,
    sigma: float | None = None,
    log: bool = False,
    seed: int = 0,
    progress: bool | None = None,
) -> SpectralDensity:
    """SLQ spectral density of a symmetric operator (see the module docstring).

    ``sigma`` defaults to 1% of the node range (of log10 nodes with ``log``). ``progress``: a bar
    with the estimated time when the call will take more than 10 s (``None``), always, or never
    (:class:`~fastdnc.spectral.progress.Meter`).
    """
    size = op.shape[0]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be an int >= 1, got {num_probes!r}")
    # each probe's Lanczos basis (steps vectors) and its product and orthogonalisation
    require_vectors(size, min(steps, size) + 4, op.dtype, op.device, f"SLQ with {steps} steps", "fewer steps")
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    meter = Meter(op, f"SLQ density ({num_probes} probes × {steps} steps)", num_probes * min(steps, size), progress)
    for _ in range(num_probes):
        v = torch.randn(size, generator=gen, dtype=op.dtype).to(op.device)
        with intra_op_threads(threads_for(4.0 * size * steps)):  # the reorthogonalisation's GEMMs
            th, w = tridiagonal_quadrature(meter, v, steps)
        pad = steps - th.numel()
        nodes.append(torch.nn.functional.pad(th, (0, pad)))
        weights.append(torch.nn.functional.pad(w, (0, pad)))
    meter.close()
    nodes_t, weights_t = torch.stack(nodes), torch.stack(weights)
    x, wts = nodes_t.reshape(-1), weights_t.reshape(-1) / num_probes
    nonpositive = 0.0
    if log:
        pos = x > 0
        nonpositive = float(wts[~pos].sum())
        x, wts = torch.log10(x[pos]), wts[pos]
    lo, hi = float(x.min()), float(x.max())
    span = max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    sigma = sigma or 0.01 * span
    if isinstance(grid, int):
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, grid, dtype=op.dtype, device=x.device)
    dens = (wts[None, :] * torch.exp(-0.5 * ((grid[:, None] - x[None, :]) / sigma) ** 2)).sum(1)
    dens = dens / (sigma * math.sqrt(2 * math.pi))
    return SpectralDensity(grid, dens, nodes_t, weights_t, sigma, log, nonpositive)
