r"""Block Lanczos with full reorthogonalisation and thick restarts: ``fd.lanczos``.

The method keeps an orthonormal Krylov basis :math:`Q` and its image :math:`W = \mathcal H Q`
(one block product per step, so operators with a fast matmat amortise their cached state), and
extracts Ritz pairs from :math:`T = Q^\top W` (Rayleigh–Ritz); T and :math:`W^\top W` grow by one
block row per step, so a step costs O(P·m·b) besides the product, and residual norms are
monitored through :math:`s^\top W^\top W s - \theta^2` and confirmed explicitly. Each new block is
:math:`\mathcal H V` orthogonalised twice against the whole basis (full reorthogonalisation:
no ghost eigenvalues). When the block loses rank (an invariant subspace was found) it is refilled
with random directions, so exhausted Krylov spaces and **degenerate eigenvalues** are handled: a
starting block of b ≥ k vectors sees up to b copies of a repeated eigenvalue (the K² outliers of a
collapsed UFM are exactly degenerate). When the basis reaches ``max_basis`` vectors it is
restarted from the best ``restart`` Ritz vectors (thick restart).

Convergence: the Ritz residual :math:`\|\mathcal H x - \theta x\|` of each wanted pair is at most
``tol`` times the largest Ritz value in magnitude. Eigenvalue errors are then of order
residual² / gap.
"""

from __future__ import annotations

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


def _orthonormalise(v: torch.Tensor, q: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """Orthonormal columns spanning v minus its projection on q (twice); lost rank is refilled
    with random directions."""
    b = v.shape[1]
    for _ in range(2):
        if q is not None and q.shape[1]:
            v = v - q @ (q.T @ v)
    qv, r = torch.linalg.qr(v)
    scale = r.diagonal().abs().max() if r.numel() else torch.zeros((), dtype=v.dtype)
    keep = r.diagonal().abs() > 1e-10 * max(float(scale), torch.finfo(v.dtype).tiny)
    qv = qv[:, keep]
    size = v.shape[0]
    avail = size - (0 if q is None else q.shape[1]) - qv.shape[1]
    need = min(b - qv.shape[1], avail)
    if need > 0:
        fill = torch.randn(size, need, generator=gen, dtype=v.dtype).to(v.device)
        base = qv if q is None else torch.cat([q, qv], dim=1)
        for _ in range(2):
            fill = fill - base @ (base.T @ fill)
        fq, fr = torch.linalg.qr(fill)
        ok = fr.diagonal().abs() > 1e-10
        qv = torch.cat([qv, fq[:, ok]], dim=1)
    return qv


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
            ≤ P); memory is 2 · P · max_basis numbers.
        seed, v0: random start (a torch.Generator seed) or an explicit (P,) / (P, b) start.

    >>> import torch
    >>> a = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> lanczos(a, k=3).eigenvalues.tolist()
    [100.0, 99.0, 98.0]
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    size = op.shape[0]
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"lanczos needs a square operator, got shape {tuple(op.shape)}")
    if not 1 <= k <= size:
        raise ValueError(f"k must be in 1..{size}, got {k}")
    dtype, device = op.dtype, op.device
    tol = tol if tol is not None else (1e-10 if dtype == torch.float64 else 1e-5)
    b = min(block_size or min(k, 4), size)
    max_basis = min(size, max_basis or max(4 * k, 3 * b + k, 60))
    max_matvecs = max_matvecs or min(50 * size, 50 * k + 2000)
    gen = torch.Generator().manual_seed(seed)
    if v0 is None:
        start = torch.randn(size, b, generator=gen, dtype=dtype).to(device)
    else:
        start = (v0[:, None] if v0.ndim == 1 else v0).to(dtype=dtype, device=device)
    block = _orthonormalise(start, None, gen)
    # preallocated basis Q, its image W = H Q, T = QᵀW and G = WᵀW (grown block by block)
    cap = max_basis + b
    q = torch.empty(size, cap, dtype=dtype, device=device)
    w = torch.empty(size, cap, dtype=dtype, device=device)
    t = torch.zeros(cap, cap, dtype=dtype, device=device)
    g = torch.zeros(cap, cap, dtype=dtype, device=device)
    m = matvecs = iterations = 0
    confirmed: torch.Tensor | None = None  # wanted Ritz values at the last convergence
    while True:
        hv = _apply(op, block)
        nb = block.shape[1]
        matvecs += nb
        iterations += 1
        q[:, m : m + nb], w[:, m : m + nb] = block, hv
        e = m + nb
        t[:e, m:e] = q[:, :e].T @ hv
        t[m:e, :m] = t[:m, m:e].T
        g[:e, m:e] = w[:, :e].T @ hv
        g[m:e, :m] = g[:m, m:e].T
        m = e
        theta, s = torch.linalg.eigh(0.5 * (t[:m, :m] + t[:m, :m].T))
        idx = _select(theta, k, which)
        sk = s[:, idx]
        scale = float(theta.abs().max()) or 1.0
        # ‖Hx − θx‖² = sᵀGs − θ² (cheap, exact up to ~√eps·scale); confirmed explicitly below
        est = ((sk * (g[:m, :m] @ sk)).sum(0) - theta[idx] ** 2).clamp_min(0).sqrt()
        exhausted = m >= size
        stop = exhausted or matvecs >= max_matvecs
        res = est
        if stop or bool((est <= max(10 * tol, 1e-6) * scale).all()):
            x = q[:, :m] @ sk
            res = torch.linalg.vector_norm(w[:, :m] @ sk - x * theta[idx], dim=0)
            done = bool((res <= tol * scale).all()) and idx.numel() == k
            wanted = torch.sort(theta[idx]).values
            stable = confirmed is not None and bool(((wanted - confirmed).abs() <= 10 * tol * scale).all())
            if (done and stable) or stop:
                order = torch.argsort(theta[idx], descending=True)
                return LanczosResult(theta[idx][order], x[:, order], res[order], done or exhausted, matvecs,
                                     iterations)
            if done:
                # converged: probe once more with a random block orthogonal to the basis, which
                # reveals any copy of a repeated eigenvalue that the Krylov space could not contain
                confirmed = wanted
                hv = torch.randn(size, b, generator=gen, dtype=dtype).to(device)
        nxt = _orthonormalise(hv, q[:, :m], gen)
        if m + nxt.shape[1] > max_basis:
            # thick restart: keep the best Ritz vectors (their images are exact: W S) and continue the
            # Krylov space with the residuals of the wanted, least converged ones
            keep = _select(theta, max(min(max_basis // 2, max_basis - 2 * b), k), which)
            sp = s[:, keep]
            qk, wk = q[:, :m] @ sp, w[:, :m] @ sp
            nk = keep.numel()
            q[:, :nk], w[:, :nk] = qk, wk
            t[:nk, :nk] = torch.diag(theta[keep])
            g[:nk, :nk] = sp.T @ g[:m, :m] @ sp
            m = nk
            worst = torch.argsort(res, descending=True)[:b]
            resid = wk[:, worst] - qk[:, worst] * theta[keep[worst]]
            nxt = _orthonormalise(resid, q[:, :m], gen)
        if nxt.shape[1] == 0:
            nxt = _orthonormalise(torch.randn(size, b, generator=gen, dtype=dtype).to(device), q[:, :m], gen)
        block = nxt
