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


def apply_operator(op, v: torch.Tensor) -> torch.Tensor:
    """``op @ v`` for a :class:`~fastdnc.curvature.operator.CurvatureOperator`, a tensor or any matmul-able."""
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
    a = apply_operator(op, uv)
    cross = float(uv[:, 0] @ a[:, 1] - uv[:, 1] @ a[:, 0])
    norms = torch.linalg.vector_norm(uv, dim=0)
    gain = float((torch.linalg.vector_norm(a, dim=0) / norms).max())
    bound = (1e-8 if dtype == torch.float64 else 1e-3) * float(norms.prod()) * gain
    if not math.isfinite(cross) or abs(cross) > bound:
        raise ValueError(
            f"the operator is not symmetric: uᵀ(Hv) − vᵀ(Hu) = {cross:.3g} for random u, v (allowed "
            f"{bound:.3g}); Lanczos needs a symmetric operator (pass check_symmetric=False to skip this "
            "probe)"
        )
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
    size, tol = _check_arguments(op, k, which, block_size, tol, max_matvecs, max_basis)
    dtype, device = op.dtype, op.device
    b = min(block_size or min(k, 4), size)
    max_basis = min(size, max_basis or max(4 * k, 3 * b + k, 60))
    max_matvecs = max_matvecs or min(50 * size, 50 * k + 2000)
    gen = torch.Generator().manual_seed(seed)
    probes = _symmetry_probe(op, size, dtype, device, seed) if check_symmetric and size > 1 else 0
    if v0 is None:
        start = torch.randn(size, b, generator=gen, dtype=dtype).to(device)
    else:
        start = _check_start(v0, size).to(dtype=dtype, device=device)
    basis = _Basis(_orthonormal(start, float(torch.linalg.vector_norm(start, dim=0).max()))[0], max_basis, b)
    matvecs, iterations = probes, 0
    confirmed: torch.Tensor | None = None  # wanted Ritz values at the last convergence
    while True:
        hv = apply_operator(op, basis.pending())
        matvecs += hv.shape[1]
        iterations += 1
        basis.extend(hv, b)
        theta, s = basis.ritz()
        idx = _select(theta, k, which)
        sk = s[:, idx]
        scale = float(theta.abs().max()) or 1.0
        res = basis.residuals(sk)
        done = bool((res <= tol * scale).all()) and idx.numel() == k
        wanted = torch.sort(theta[idx]).values
        stable = confirmed is not None and bool(((wanted - confirmed).abs() <= 10 * tol * scale).all())
        if done:
            confirmed = wanted
        # the pending block holds at least b vectors: random directions refill lost rank, and after a
        # convergence a random probe block reveals any copy of a repeated eigenvalue that the Krylov
        # space could not contain
        basis.append(_random_block(basis.q[:, : basis.mt], b if done else b - basis.num_pending, gen))
        exhausted = basis.num_pending == 0
        if (done and stable) or exhausted or matvecs >= max_matvecs:
            order = torch.argsort(theta[idx], descending=True)
            return LanczosResult(
                theta[idx][order], basis.applied() @ sk[:, order], res[order], done or exhausted, matvecs, iterations
            )
        nkeep = max(min(max_basis // 2, max_basis - 2 * b), k)
        if basis.mt + basis.num_pending > max_basis and nkeep < basis.ma:
            basis.restart(theta, s, _select(theta, nkeep, which))


def _check_arguments(
    op, k: int, which: str, block_size: int | None, tol: float | None, max_matvecs: int | None, max_basis: int | None
) -> tuple[int, float]:
    """The operator's size and the tolerance (default 1e-10 in float64, 1e-5 otherwise), or a
    ValueError naming the bad argument."""
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
    if tol is not None and not (
        isinstance(tol, (int, float)) and not isinstance(tol, bool) and math.isfinite(tol) and tol > 0
    ):
        raise ValueError(f"tol must be a finite number > 0 (or None), got {tol!r}")
    return size, tol if tol is not None else (1e-10 if op.dtype == torch.float64 else 1e-5)


class _Basis:
    r"""The basis Q = [applied | pending] in preallocated columns (grown when a probe widens the
    block) and the coefficients C with :math:`\mathcal H Q_{:, :m_a} = Q_{:, :m_t} C_{:m_t, :m_a}`."""

    def __init__(self, first: torch.Tensor, max_basis: int, b: int) -> None:
        size = first.shape[0]
        self.q = first.new_empty(size, max_basis + 3 * max(b, first.shape[1]))
        self.c = first.new_zeros(self.q.shape[1], self.q.shape[1])
        self.ma, self.mt = 0, first.shape[1]
        self.q[:, : self.mt] = first

    @property
    def num_pending(self) -> int:
        return self.mt - self.ma

    def pending(self) -> torch.Tensor:
        """The pending block, column-major (operators split it without a copy)."""
        return self.q[:, self.ma : self.mt].T.contiguous().T

    def applied(self) -> torch.Tensor:
        return self.q[:, : self.ma]

    def extend(self, hv: torch.Tensor, b: int) -> None:
        r"""Record :math:`\mathcal H Q_p` = ``hv``: its projection on the basis and the QR of the rest,
        whose orthonormal part becomes the new pending block."""
        self.ma = self.mt
        rest, coef = _project_out(hv, self.applied())
        nxt, r = _orthonormal(rest, float(torch.linalg.vector_norm(hv, dim=0).max()))
        if self.ma + 2 * nxt.shape[1] + b > self.q.shape[1]:
            grow = self.ma + 2 * nxt.shape[1] + 2 * b
            self.q = torch.cat([self.q[:, : self.ma], self.q.new_empty(self.q.shape[0], grow - self.ma)], dim=1)
            self.c = torch.nn.functional.pad(self.c, (0, grow - self.c.shape[1], 0, grow - self.c.shape[0]))
        self.mt = self.ma + nxt.shape[1]
        self.q[:, self.ma : self.mt] = nxt
        self.c[: self.ma, self.ma - hv.shape[1] : self.ma] = coef
        self.c[self.ma : self.mt, self.ma - hv.shape[1] : self.ma] = r

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ritz values (ascending) and vectors in the basis of :math:`T = Q_a^\top\\mathcal HQ_a`."""
        t = self.c[: self.ma, : self.ma]
        return torch.linalg.eigh(0.5 * (t + t.T))

    def residuals(self, sk: torch.Tensor) -> torch.Tensor:
        """:math:`\\|\\mathcal Hx - \theta x\\| = \\|C_p s\\|` for the Ritz vectors :math:`x = Q_a s`."""
        return torch.linalg.vector_norm(self.c[self.ma : self.mt, : self.ma] @ sk, dim=0)

    def append(self, block: torch.Tensor) -> None:
        self.q[:, self.mt : self.mt + block.shape[1]] = block
        self.mt += block.shape[1]

    def restart(self, theta: torch.Tensor, s: torch.Tensor, keep: torch.Tensor) -> None:
        """Thick restart: Y = Q_a S keeps the best Ritz vectors, and H Y = Y Θ + Q_p (C_p S)."""
        sp = s[:, keep]
        nk, pw = keep.numel(), self.num_pending
        pending, cp = self.q[:, self.ma : self.mt].clone(), self.c[self.ma : self.mt, : self.ma] @ sp
        self.q[:, :nk] = self.applied() @ sp
        self.q[:, nk : nk + pw] = pending
        self.c.zero_()
        self.c[:nk, :nk] = torch.diag(theta[keep])
        self.c[nk : nk + pw, :nk] = cp
        self.ma, self.mt = nk, nk + pw
