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
import warnings
from dataclasses import dataclass

import torch

from .._memory import DENSE_LIMIT, require_vectors
from .._threads import intra_op_threads, threads_for
from ..curvature.eigenvectors import eigenvector_view
from ..curvature.gram import gram_route
from ..curvature.kronecker import KroneckerOperator
from ..curvature.operator import CurvatureOperator
from .apply import Meter, apply_operator
from .krylov import KrylovBasis, orthonormal, project_out

WHICH = ("LA", "SA", "LM", "BE")


class PrecisionWarning(UserWarning):
    """A requested tolerance below what the operator's products can resolve (it is clamped)."""


class ConvergenceWarning(UserWarning):
    """An iteration stopped on its product budget before its tolerance."""


# the smallest relative residual a product of this dtype resolves (the default tolerances sit at or above)
REACHABLE_TOL = {torch.float64: 1e-13, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


@dataclass
class LanczosResult:
    """``eigenvalues`` (k,) in descending order with ``eigenvectors`` (P × k) as columns,
    ``residuals`` (k,) the Ritz residual norms, ``converged`` whether all are within tolerance,
    ``num_matvecs`` the operator columns applied, ``iterations`` the block steps taken and
    ``low_precision_matvecs`` the columns applied to a ``low_precision`` operator."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    converged: bool
    num_matvecs: int
    iterations: int
    low_precision_matvecs: int = 0


def _random_block(q: torch.Tensor, count: int, gen: torch.Generator, pool: torch.Tensor | None = None) -> torch.Tensor:
    """Up to ``count`` orthonormal random directions orthogonal to the columns of q: random
    combinations of the warm-start ``pool`` while it has directions the basis lacks, else random."""
    count = min(count, q.shape[0] - q.shape[1])
    if count <= 0:
        return q.new_empty(q.shape[0], 0)
    if pool is not None:
        mix = torch.randn(pool.shape[1], count, generator=gen, dtype=q.dtype).to(q.device)
        fill = pool @ mix
        rest = project_out(fill, q)[0]
        # a pool direction that the basis already holds leaves only rounding noise: random instead
        found = orthonormal(rest, float(torch.linalg.vector_norm(fill, dim=0).max()) * 1e-6)[0]
        if found.shape[1] == count:
            return found
    fill = torch.randn(q.shape[0], count, generator=gen, dtype=q.dtype).to(q.device)
    return orthonormal(project_out(fill, q)[0])[0]


def _check_start(start: torch.Tensor, size: int) -> torch.Tensor:
    """A tensor start as a (P, b) block, or a ValueError: wrong shape, NaN/Inf, a zero column."""
    block = start[:, None] if start.ndim == 1 else start
    if block.ndim != 2 or block.shape[0] != size or block.shape[1] == 0:
        raise ValueError(f"start must have shape ({size},) or ({size}, b) with b >= 1, got {tuple(start.shape)}")
    if not bool(torch.isfinite(block).all()):
        raise ValueError("start holds NaN or Inf entries")
    if bool((torch.linalg.vector_norm(block, dim=0) == 0).any()):
        raise ValueError("start has a zero column: a start vector must be non-zero")
    return block


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
    start=None,
    v0: torch.Tensor | None = None,
    check_symmetric: bool = True,
    low_precision=None,
    progress: bool | None = None,
) -> LanczosResult:
    r"""The k extreme eigenpairs of a symmetric operator (see the module docstring).

    Args:
        op: a :class:`~fastdnc.curvature.operator.CurvatureOperator` or a symmetric tensor.
        k: number of eigenpairs. which: ``"LA"`` largest, ``"SA"`` smallest, ``"LM"`` largest in
            magnitude, ``"BE"`` both ends (⌈k/2⌉ largest and ⌊k/2⌋ smallest).
        block_size: vectors per step. Default: adaptive, 1 for k = 1 and 2 otherwise, widened when
            the converged Ritz values show a cluster as large as the block (a Krylov space of b
            vectors holds at most b copies of an exactly repeated eigenvalue). Only then is the
            convergence confirmed by a probe: a fresh random block orthogonal to the basis, and
            the result is returned when the probe leaves the wanted eigenvalues unchanged. A
            fixed ``block_size`` keeps its width and probes every convergence it cannot rule out.
        tol: residual tolerance relative to the spectral scale (default 1e-10 in float64, 1e-5 in
            float32). max_matvecs: budget of operator columns (default 50·k + 2000, at most
            50·P). max_basis: basis size that triggers a thick restart (default max(4k, 3b + k, 60),
            ≤ P); memory is P · max_basis numbers.
        seed: the torch.Generator seed of the random start and the probes.
        start: a warm start: a (P,) / (P, m) tensor (finite, no zero column), or an operator
            with exact eigenpairs (e.g. the GGN of the same model, whose ``eigh`` is exact
            through its sample-space Gram), whose top k + 2 eigenvectors are the first block.
        v0: the former name of a tensor ``start``: deprecated (a DeprecationWarning), the same
            result.
        low_precision: the same matrix in a lower precision (e.g. the operator of a float32 copy of
            the model): the Krylov products run on it while the basis and its orthogonalisation
            stay in ``op``'s precision; then one Rayleigh–Ritz step with ``op`` on the k + 2 best
            Ritz vectors (k + 2 products) refines them, and where the residuals still exceed
            ``tol`` a Lanczos on ``op`` warm-started from them finishes (its products counted in
            ``num_matvecs``). The low-precision run stops at 1e-5 (float32 products cannot
            resolve more); ill-conditioned clusters (gaps near that level) are left to the warm
            finish, so the result meets ``tol`` in ``op``'s precision either way.
        progress: a bar with the estimated time when the run will take more than 10 s (``None``),
            always, or never (:class:`~fastdnc.spectral.progress.Meter`; the estimate assumes about
            3k + 20 products).
        check_symmetric: refuse an operator whose projection :math:`Q^\top\mathcal HQ` on the
            first two Krylov vectors is not symmetric to 1e-8 (1e-3 in float32) of its largest
            entry: Lanczos on a non-symmetric operator returns confident wrong values. The check
            reads coefficients the iteration computes anyway (no extra product); ``False`` skips it.

    Raises:
        ValueError: a bad argument (``k``, ``tol``, ``block_size``, ``start``, …) or a
            non-symmetric operator.

    >>> import torch
    >>> a = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> lanczos(a, k=3).eigenvalues.tolist()
    [100.0, 99.0, 98.0]
    """
    if v0 is not None:
        if start is not None:
            raise ValueError("give start or v0, not both (v0 is the former name of start)")
        warnings.warn("lanczos(v0=...) is the former name of start=...", DeprecationWarning, stacklevel=2)
        start = v0
    options = dict(
        block_size=block_size,
        tol=tol,
        max_matvecs=max_matvecs,
        max_basis=max_basis,
        seed=seed,
        start=start,
        check_symmetric=check_symmetric,
        low_precision=low_precision,
        progress=progress,
    )
    size = op.shape[0] if hasattr(op, "shape") and len(op.shape) == 2 else 0
    # the orthogonalisation's GEMMs (P × basis × block) set the thread count between products; each
    # product runs with its operator's own (CurvatureOperator.gemm_flops)
    with intra_op_threads(threads_for(4.0 * size * max(4 * k, 60))):
        return _lanczos(op, k, which, **options)


def _lanczos(
    op,
    k: int,
    which: str,
    *,
    block_size: int | None,
    tol: float | None,
    max_matvecs: int | None,
    max_basis: int | None,
    seed: int,
    start,
    check_symmetric: bool,
    low_precision,
    progress: bool | None,
) -> LanczosResult:
    """:func:`lanczos` with its arguments checked by the caller's thread setting."""
    size, tol = _check_arguments(op, k, which, block_size, tol, max_matvecs, max_basis)
    if low_precision is not None:
        options = dict(
            block_size=block_size,
            max_matvecs=max_matvecs,
            max_basis=max_basis,
            seed=seed,
            check_symmetric=check_symmetric,
        )
        return _mixed(op, low_precision, k, which, tol, start=start, **options)
    b, max_basis, max_matvecs = _sizes(op, size, k, block_size, max_basis, max_matvecs)
    meter = Meter(op, f"Lanczos top {k}", min(3 * k + 20, max_matvecs), progress)
    gen = torch.Generator().manual_seed(seed)
    first = _start_block(op, start, size, b, k, gen)
    # a warm start wider than the block: the block is random combinations of it, and refills and
    # probes draw from it too, so the Krylov space stays in the start's span while that helps
    pool = first if first.shape[1] > b and block_size is None else None
    if pool is not None:
        first = pool @ torch.randn(pool.shape[1], b, generator=gen, dtype=pool.dtype).to(pool.device)
    basis = KrylovBasis(orthonormal(first, float(torch.linalg.vector_norm(first, dim=0).max()))[0], max_basis, b)
    matvecs, iterations, unchecked = 0, 0, check_symmetric and size > 1
    confirmed: torch.Tensor | None = None  # wanted Ritz values at the last probed convergence
    probe_at: int | None = None  # the iteration of the last probe
    first_done = 0  # the iteration of the first convergence
    while True:
        hv = meter @ basis.pending()
        matvecs += hv.shape[1]
        iterations += 1
        basis.extend(hv, b)
        if unchecked and basis.num_applied >= 2:
            _check_projection_symmetric(basis.projection(), getattr(op, "product_dtype", op.dtype))
            unchecked = False
        theta, s = basis.ritz()
        idx = _select(theta, k, which)
        sk = s[:, idx]
        scale = float(theta.abs().max()) or 1.0
        res = basis.residuals(sk)
        done = bool((res <= tol * scale).all()) and idx.numel() == k
        wanted = torch.sort(theta[idx]).values
        stable = confirmed is not None and bool(((wanted - confirmed).abs() <= 10 * tol * scale).all())
        cluster = _open_cluster(theta, idx, max(1e-6, 100 * tol) * scale) if done else 0
        first_done = first_done or (iterations if done else 0)
        # a probe has had its chance once the Krylov space it starts has grown for about half the
        # iterations of the first convergence (a missed copy converges like a fresh start)
        matured = probe_at is not None and iterations - probe_at >= 3
        finished = done and ((probe_at is None and cluster < b) or (stable and matured))
        if done and not finished and not (stable and not matured):
            # a cluster as large as the block: probe, and widen an adaptive block
            confirmed, probe_at = wanted, iterations
            b = min(size, max(b, min(cluster + 1, 2 * b))) if block_size is None else b
        # the pending block holds at least b vectors: random directions refill lost rank, and a probe
        # reveals any copy of a repeated eigenvalue that the Krylov space could not contain
        if not finished:
            fresh = done and probe_at == iterations
            basis.append(
                _random_block(basis.q[:, : basis.num_columns], b if fresh else b - basis.num_pending, gen, pool)
            )
        exhausted = basis.num_pending == 0
        if finished or exhausted or matvecs >= max_matvecs:
            meter.close()
            if not (done or exhausted):
                warnings.warn(
                    f"Lanczos stopped at its budget of {max_matvecs:,} products (max_matvecs) before tol={tol:g}: "
                    f"largest relative residual {float(res.max()) / scale:.2e} (converged=False)",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            order = torch.argsort(theta[idx], descending=True)
            return LanczosResult(
                theta[idx][order], basis.applied() @ sk[:, order], res[order], done or exhausted, matvecs, iterations
            )
        nkeep = max(min(max_basis // 2, max_basis - 2 * b), k)
        if basis.num_columns + basis.num_pending > max_basis and nkeep < basis.num_applied:
            basis.restart(theta, s, _select(theta, nkeep, which))


def _sizes(
    op, size: int, k: int, block_size: int | None, max_basis: int | None, max_matvecs: int | None
) -> tuple[int, int, int]:
    """The block size, basis size and product budget (defaults of :func:`lanczos`), once the memory
    they need fits: the basis (with room for 3 blocks), a restart's copy of the kept vectors, the
    product block and its orthogonalisation, the result, and the coefficients (basis²)."""
    b = min(block_size or (1 if k == 1 else 2), size)
    max_basis = min(size, max_basis or max(4 * k, 3 * b + k, 60))
    stored = max_basis + 3 * b
    require_vectors(
        size,
        2 * stored + 4 * b + k + stored * stored / size,
        op.dtype,
        getattr(op, "device", "cpu"),
        f"fd.lanczos with k={k}, its basis of {max_basis:,} and a restart copy",
        "a smaller k or max_basis",
    )
    return b, max_basis, max_matvecs or min(50 * size, 50 * k + 2000)


def gram_top(gram, k: int, tol: float | None = None) -> LanczosResult:
    r"""The k largest eigenpairs of a Gauss–Newton operator by Lanczos on its dense sample-space Gram
    (:class:`~fastdnc.curvature.gram.SampleGram`; products of M × M, no operator product), with
    ``num_matvecs`` = 0. The ``residuals`` bound :math:`\|Gv-\lambda v\|` by the Gram's Ritz residual
    times :math:`\sqrt{\sigma_{\max}/\sigma}`."""
    if not 1 <= k <= min(gram.dim, gram.size):
        raise ValueError(f"k must be in 1..{min(gram.dim, gram.size)} (the rank bound of this Gram), got {k}")
    res = lanczos(gram.matrix(), k, tol=tol, check_symmetric=False)
    sigma = res.eigenvalues.clamp_min(torch.finfo(res.eigenvalues.dtype).tiny)
    bound = res.residuals * (sigma[0] / sigma).sqrt()
    vectors = gram.vectors(sigma, res.eigenvectors)
    return LanczosResult(res.eigenvalues + gram.shift, vectors, bound, res.converged, 0, res.iterations)


def _open_cluster(theta: torch.Tensor, idx: torch.Tensor, gap: float) -> int:
    """The size of the largest run of wanted Ritz values (neighbours within ``gap``) that no unwanted
    Ritz value joins. Only such a run can hide a copy that would change the wanted values: a run
    that an unwanted value joins already has a copy to spare."""
    wanted = torch.sort(theta[idx]).values
    if wanted.numel() == 0:
        return 0
    keep = torch.ones(theta.numel(), dtype=torch.bool, device=theta.device)
    keep[idx] = False
    others = theta[keep]
    edges = [-1, *torch.nonzero(wanted.diff() > gap).flatten().tolist(), wanted.numel() - 1]
    sizes = [0]
    for lo, hi in zip(edges[:-1], edges[1:]):
        run = wanted[lo + 1 : hi + 1]
        joined = bool(((others >= run[0] - gap) & (others <= run[-1] + gap)).any())
        sizes.append(0 if joined else run.numel())
    return max(sizes)


def _check_projection_symmetric(t: torch.Tensor, product_dtype: torch.dtype) -> None:
    r"""Refuse a non-symmetric operator from :math:`T = Q^\top\mathcal HQ` (symmetric iff the
    operator is, on the Krylov space; full reorthogonalisation computes both triangles)."""
    asym = float((t - t.T).abs().max())
    bound = (1e-8 if product_dtype == torch.float64 else 1e-3) * float(t.abs().max())
    if not math.isfinite(asym) or asym > bound:
        raise ValueError(
            f"the operator is not symmetric: its projection on the Krylov space differs from its transpose by "
            f"{asym:.3g} (allowed {bound:.3g}); Lanczos needs a symmetric operator (pass check_symmetric=False "
            "to skip this check)"
        )


def _start_block(op, start, size: int, b: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """The first block: random, a given tensor, or the top k + 2 eigenvectors of an operator with
    exact eigenpairs."""
    dtype, device = op.dtype, op.device
    if start is None:
        return torch.randn(size, b, generator=gen, dtype=dtype).to(device)
    if isinstance(start, torch.Tensor):
        return _check_start(start, size).to(dtype=dtype, device=device)
    if not hasattr(start, "eigh") or tuple(getattr(start, "shape", ())) != (size, size):
        raise ValueError(f"start must be a tensor of shape ({size},) or ({size}, m), or a {size} × {size} operator")
    gram = gram_route(start) if isinstance(start, CurvatureOperator) and start.symmetric else None
    if gram is not None and gram.dim <= DENSE_LIMIT:  # a Gauss-Newton operator's top through its Gram
        block = gram_top(gram, min(k + 2, gram.dim, size)).eigenvectors
    elif size <= DENSE_LIMIT or not isinstance(start, CurvatureOperator) or isinstance(start, KroneckerOperator):
        view = eigenvector_view(*start.eigh())  # exact factors, or small enough for the dense route
        block = view.top(min(k + 2, size, view.rank))
    else:  # never a dense decomposition above the limit: the start operator's own top, by Lanczos
        block = lanczos(start, min(k + 2, size), tol=1e-4).eigenvectors
    return _check_start(block.to(dtype=dtype, device=device), size)


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
    if tol is None:
        return size, 1e-10 if op.dtype == torch.float64 else 1e-5
    product = getattr(op, "product_dtype", op.dtype)
    floor = REACHABLE_TOL.get(product, REACHABLE_TOL[torch.float32])
    if tol < floor:
        warnings.warn(
            f"tol={tol:g} is below what {str(product).removeprefix('torch.')} products resolve: clamped to "
            f"{floor:g} (a float64 operator, or low_precision= with one, reaches 1e-10)",
            PrecisionWarning,
            stacklevel=4,
        )
        return size, floor
    return size, tol


class _InPrecision:
    """An operator of ``dtype`` whose products run on ``low`` (e.g. the same matrix built in
    float32): vectors are cast down for the product and its result cast back up."""

    def __init__(self, low, dtype: torch.dtype) -> None:
        self.low, self.dtype, self.device, self.product_dtype = low, dtype, low.device, low.dtype
        self.shape = tuple(low.shape)
        self.symmetric = getattr(low, "symmetric", True)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return apply_operator(self.low, v.to(self.low.dtype)).to(self.dtype)


def _rayleigh_ritz(op, vectors: torch.Tensor, k: int, which: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ritz pairs of ``op`` on span(``vectors``) in ``op``'s precision (one block of products):
    the wanted k (descending), their vectors and residual norms :math:`\\|\\mathcal Hy - \\theta y\\|`."""
    q = torch.linalg.qr(vectors.to(op.dtype))[0]
    hq = apply_operator(op, q)
    t = q.T @ hq
    theta, s = torch.linalg.eigh(0.5 * (t + t.T))
    idx = _select(theta, k, which)
    order = idx[torch.argsort(theta[idx], descending=True)]
    y, hy = q @ s[:, order], hq @ s[:, order]
    return theta[order], y, torch.linalg.vector_norm(hy - y * theta[order], dim=0)


def _mixed(op, low, k: int, which: str, tol: float, start=None, **options) -> LanczosResult:
    """Lanczos with ``low``'s products (the basis and its orthogonalisation in ``op``'s precision),
    a Rayleigh–Ritz refinement with ``op`` on the k + 2 best Ritz vectors, and, only where its
    residuals still exceed ``tol``, a float64 Lanczos warm-started from them."""
    if tuple(getattr(low, "shape", ())) != tuple(op.shape):
        raise ValueError(f"low_precision must be a {op.shape[0]} × {op.shape[0]} operator of the same matrix")
    low_tol = max(tol, 1e-5)  # float32 products cannot resolve more
    coarse = lanczos(_InPrecision(low, op.dtype), min(k + 2, op.shape[0]), which, tol=low_tol, start=start, **options)
    values, vectors, residuals = _rayleigh_ritz(op, coarse.eigenvectors, k, which)
    spent = coarse.eigenvectors.shape[1]
    scale = float(values.abs().max()) or 1.0
    if bool((residuals <= tol * scale).all()):
        return LanczosResult(values, vectors, residuals, True, spent, coarse.iterations + 1, coarse.num_matvecs)
    polished = lanczos(op, k, which, tol=tol, start=vectors, **options)
    polished.num_matvecs += spent
    polished.low_precision_matvecs = coarse.num_matvecs
    return polished
