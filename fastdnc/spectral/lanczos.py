r"""Block Lanczos with full reorthogonalisation and thick restarts: ``fd.lanczos``.

The method keeps an orthonormal basis :math:`Q` and never stores the images :math:`\mathcal H Q`:
each new block product is orthogonalised twice against the whole basis (classical Gram–Schmidt
twice, full reorthogonalisation: no ghost eigenvalues), and the coefficients of that projection
and of the QR of what is left are kept in a small matrix C, so that

.. math::

    \mathcal H Q_a = Q\,C \qquad (Q_a: \text{the applied columns}, Q = [Q_a, Q_p]),

with :math:`Q_p` the pending block (the next one to be applied). Then :math:`T = Q_a^\top\mathcal
HQ_a` is the top square of C (Rayleigh–Ritz), and the Ritz residual of
:math:`x = Q_a s` is exactly :math:`\|\mathcal Hx - \theta x\| = \|C_p s\|` with :math:`C_p` the
pending rows: no extra product and no cancellation. A step reads the basis four times and costs
O(P·m·b) besides the product, and the memory is P·max_basis numbers.

When the block loses rank (an invariant subspace was found) it is refilled with random directions,
so exhausted Krylov spaces and **degenerate eigenvalues** are handled: a Krylov space of b vectors
holds at most b copies of an exactly repeated eigenvalue (the K² outliers of a collapsed UFM are
exactly degenerate), so each convergence is confirmed by a probe: a fresh random block
orthogonal to the basis joins the pending block, and the result is returned only when the wanted
Ritz values do not move. When the basis reaches ``max_basis`` vectors it is restarted from the
best Ritz vectors :math:`Y = Q_aS`, for which :math:`\mathcal HY = Y\Theta + Q_p(C_pS)` (thick
restart), so the relation above holds throughout.

Convergence: the Ritz residual of each wanted pair is at most ``tol`` times the largest Ritz value
in magnitude. Eigenvalue errors are then of order residual² / gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..curvature.operator import CurvatureOperator

WHICH = ("LA", "SA", "LM", "BE")


@dataclass
class LanczosResult:
    """``eigenvalues`` (k,) in descending order with ``eigenvectors`` (P × k) as columns,
    ``residuals`` (k,) the Ritz residual norms, ``converged`` whether all are within tolerance,
    ``num_matvecs`` the operator columns applied and ``iterations`` the block steps taken."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    converged: bool
    num_matvecs: int
    iterations: int


def _apply(op, v: torch.Tensor) -> torch.Tensor:
    if isinstance(op, torch.Tensor):
        return op @ v
    return op.matmat(v) if isinstance(op, CurvatureOperator) else op @ v


def _project_out(v: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v − q qᵀ v by classical Gram–Schmidt twice, and the coefficients qᵀ v."""
    coef = q.T @ v
    v = v - q @ coef
    again = q.T @ v
    return v - q @ again, coef + again


def _orthonormal(v: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Q R = v with the columns that are null at ``scale`` (rounding noise) dropped: (Q (P × r), R (r × b))."""
    qv, r = torch.linalg.qr(v)
    keep = r.diagonal().abs() > torch.finfo(v.dtype).eps ** 0.75 * max(scale, torch.finfo(v.dtype).tiny)
    return qv[:, keep], r[keep]


def _random_block(q: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Up to ``count`` orthonormal random directions orthogonal to the columns of q."""
    count = min(count, q.shape[0] - q.shape[1])
    if count <= 0:
        return q.new_empty(q.shape[0], 0)
    fill = torch.randn(q.shape[0], count, generator=gen, dtype=q.dtype).to(q.device)
    return _orthonormal(_project_out(fill, q)[0])[0]


def _check_start(v0: torch.Tensor, size: int) -> torch.Tensor:
    """``v0`` as a (P, b) block, or a ValueError: wrong type or shape, NaN/Inf, a zero column."""
    if not isinstance(v0, torch.Tensor):
        raise ValueError(f"v0 must be a torch.Tensor of shape ({size},) or ({size}, b), got {type(v0).__name__}")
    block = v0[:, None] if v0.ndim == 1 else v0
    if block.ndim != 2 or block.shape[0] != size or block.shape[1] == 0:
        raise ValueError(f"v0 must have shape ({size},) or ({size}, b) with b >= 1, got {tuple(v0.shape)}")
    if not bool(torch.isfinite(block).all()):
        raise ValueError("v0 holds NaN or Inf entries")
    if bool((torch.linalg.vector_norm(block, dim=0) == 0).any()):
        raise ValueError("v0 has a zero column: a start vector must be non-zero")
    return block


def _symmetry_probe(op, size: int, dtype: torch.dtype, device: torch.device, seed: int) -> int:
    """Raise ValueError if ``op`` is visibly non-symmetric (see ``check_symmetric``); returns the
    number of operator columns it applied (2)."""
    gen = torch.Generator().manual_seed(seed + 0x5EED)
    uv = torch.randn(size, 2, generator=gen, dtype=dtype).to(device)
    a = _apply(op, uv)
    cross = float(uv[:, 0] @ a[:, 1] - uv[:, 1] @ a[:, 0])
    norms = torch.linalg.vector_norm(uv, dim=0)
    gain = float((torch.linalg.vector_norm(a, dim=0) / norms).max())
    bound = (1e-8 if dtype == torch.float64 else 1e-3) * float(norms.prod()) * gain
    if not math.isfinite(cross) or abs(cross) > bound:
        raise ValueError(f"the operator is not symmetric: uᵀ(Hv) − vᵀ(Hu) = {cross:.3g} for random u, v (allowed "
                         f"{bound:.3g}); Lanczos needs a symmetric operator (pass check_symmetric=False to skip this "
                         "probe)")
    return 2


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Indices (into ascending theta) of the wanted Ritz values."""
    m = theta.numel()
    k = min(k, m)
    if which == "LA":
        return torch.arange(m - 1, m - 1 - k, -1, device=theta.device)
    if which == "SA":
        return torch.arange(k, device=theta.device)
    if which == "LM":
        return torch.argsort(theta.abs(), descending=True)[:k]
    top = (k + 1) // 2
    idx = torch.cat([torch.arange(m - 1, m - 1 - top, -1), torch.arange(k - top)]).to(theta.device)
    return torch.unique(idx)


def lanczos(
    op,
    k: int = 20,
    which: str = "LA",
    *,
    block_size: int | None = None,
    tol: float | None = None,
    max_matvecs: int | None = None,
    max_basis: int | None = None,
    seed: int = 0,
    v0: torch.Tensor | None = None,
    check_symmetric: bool = True,
) -> LanczosResult:
    """The k extreme eigenpairs of a symmetric operator (see the module docstring).

    Args:
        op: a :class:`~fastdnc.curvature.operator.CurvatureOperator` or a symmetric tensor.
        k: number of eigenpairs. which: ``"LA"`` largest, ``"SA"`` smallest, ``"LM"`` largest in
            magnitude, ``"BE"`` both ends (⌈k/2⌉ largest and ⌊k/2⌋ smallest).
        block_size: vectors per step (default min(k, 4)). Krylov spaces of b vectors hold at most
            b copies of an exactly repeated eigenvalue, so each convergence is confirmed by a probe
            with a fresh random block orthogonal to the basis; the result is returned only when the
            probe leaves the wanted eigenvalues unchanged.
        tol: residual tolerance relative to the spectral scale (default 1e-10 in float64, 1e-5 in
            float32). max_matvecs: budget of operator columns (default 50·k + 2000, at most
            50·P). max_basis: basis size that triggers a thick restart (default max(4k, 3b + k, 60),
            ≤ P); memory is P · max_basis numbers.
        seed, v0: random start (a torch.Generator seed) or an explicit (P,) / (P, b) start
            (finite, no zero column).
        check_symmetric: first apply the operator to two random vectors u, v and refuse it when
            :math:`|u^\\top(\\mathcal Hv) - v^\\top(\\mathcal Hu)|` exceeds 1e-8 (1e-3 in float32)
            times :math:`\\|u\\|\\|v\\|\\max(\\|\\mathcal Hu\\|/\\|u\\|, \\|\\mathcal Hv\\|/\\|v\\|)`:
            Lanczos on a non-symmetric operator returns confident wrong values. The probe costs
            two operator columns (counted in ``num_matvecs``); ``False`` skips it.

    Raises:
        ValueError: a bad argument (``k``, ``tol``, ``block_size``, ``v0``, …) or a non-symmetric
            operator.

    >>> import torch
    >>> a = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> lanczos(a, k=3).eigenvalues.tolist()
    [100.0, 99.0, 98.0]
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if not hasattr(op, "shape") or len(op.shape) != 2 or op.shape[0] != op.shape[1]:
        raise ValueError(f"lanczos needs a square operator, got shape {tuple(getattr(op, 'shape', ()))}")
    size = op.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ValueError(f"k must be an int in 1..{size}, got {k!r}")
    for name, value in (("block_size", block_size), ("max_matvecs", max_matvecs), ("max_basis", max_basis)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an int >= 1 (or None), got {value!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and math.isfinite(tol)
                                and tol > 0):
        raise ValueError(f"tol must be a finite number > 0 (or None), got {tol!r}")
    dtype, device = op.dtype, op.device
    tol = tol if tol is not None else (1e-10 if dtype == torch.float64 else 1e-5)
    b = min(block_size or min(k, 4), size)
    max_basis = min(size, max_basis or max(4 * k, 3 * b + k, 60))
    max_matvecs = max_matvecs or min(50 * size, 50 * k + 2000)
    gen = torch.Generator().manual_seed(seed)
    probes = _symmetry_probe(op, size, dtype, device, seed) if check_symmetric and size > 1 else 0
    if v0 is None:
        start = torch.randn(size, b, generator=gen, dtype=dtype).to(device)
    else:
        start = _check_start(v0, size).to(dtype=dtype, device=device)
    first = _orthonormal(start, float(torch.linalg.vector_norm(start, dim=0).max()))[0]
    # basis Q = [applied | pending] in preallocated columns (grown if a probe widens the block), and
    # H Q[:, :ma] = Q[:, :mt] C[:mt, :ma]
    q = torch.empty(size, max_basis + 3 * max(b, first.shape[1]), dtype=dtype, device=device)
    c = torch.zeros(q.shape[1], q.shape[1], dtype=dtype, device=device)
    ma, mt = 0, first.shape[1]
    q[:, :mt] = first
    matvecs, iterations = probes, 0
    confirmed: torch.Tensor | None = None  # wanted Ritz values at the last convergence
    while True:
        hv = _apply(op, q[:, ma:mt].T.contiguous().T)  # column-major: operators split it without a copy
        matvecs += mt - ma
        iterations += 1
        ma = mt
        rest, coef = _project_out(hv, q[:, :ma])
        nxt, r = _orthonormal(rest, float(torch.linalg.vector_norm(hv, dim=0).max()))
        if ma + 2 * nxt.shape[1] + b > q.shape[1]:
            grow = ma + 2 * nxt.shape[1] + 2 * b
            q = torch.cat([q[:, :ma], q.new_empty(size, grow - ma)], dim=1)
            c = torch.nn.functional.pad(c, (0, grow - c.shape[1], 0, grow - c.shape[0]))
        mt = ma + nxt.shape[1]
        q[:, ma:mt] = nxt
        c[:ma, ma - hv.shape[1] : ma] = coef
        c[ma:mt, ma - hv.shape[1] : ma] = r
        theta, s = torch.linalg.eigh(0.5 * (c[:ma, :ma] + c[:ma, :ma].T))
        idx = _select(theta, k, which)
        sk = s[:, idx]
        scale = float(theta.abs().max()) or 1.0
        res = torch.linalg.vector_norm(c[ma:mt, :ma] @ sk, dim=0)
        done = bool((res <= tol * scale).all()) and idx.numel() == k
        wanted = torch.sort(theta[idx]).values
        stable = confirmed is not None and bool(((wanted - confirmed).abs() <= 10 * tol * scale).all())
        if done:
            confirmed = wanted
        # the pending block holds at least b vectors: random directions refill lost rank, and after a
        # convergence a random probe block reveals any copy of a repeated eigenvalue that the Krylov
        # space could not contain
        fill = _random_block(q[:, :mt], b if done else b - (mt - ma), gen)
        q[:, mt : mt + fill.shape[1]] = fill
        mt += fill.shape[1]
        exhausted = mt == ma
        if (done and stable) or exhausted or matvecs >= max_matvecs:
            order = torch.argsort(theta[idx], descending=True)
            return LanczosResult(theta[idx][order], q[:, :ma] @ sk[:, order], res[order], done or exhausted,
                                 matvecs, iterations)
        nkeep = max(min(max_basis // 2, max_basis - 2 * b), k)
        if mt + (mt - ma) > max_basis and nkeep < ma:
            # thick restart: Y = Q_a S keeps the best Ritz vectors, and H Y = Y Θ + Q_p (C_p S)
            keep = _select(theta, nkeep, which)
            sp = s[:, keep]
            nk, pw = keep.numel(), mt - ma
            pending, cp = q[:, ma:mt].clone(), c[ma:mt, :ma] @ sp
            q[:, :nk] = q[:, :ma] @ sp
            q[:, nk : nk + pw] = pending
            c.zero_()
            c[:nk, :nk] = torch.diag(theta[keep])
            c[nk : nk + pw, :nk] = cp
            ma, mt = nk, nk + pw
