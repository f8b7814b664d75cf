r"""The Krylov basis of :func:`fastdnc.lanczos` and its orthogonalisation.

:class:`KrylovBasis` keeps :math:`Q = [Q_a, Q_p]` (applied and pending columns) and the small
matrix C with :math:`\mathcal HQ_a = QC` exactly (see :mod:`fastdnc.spectral.lanczos`), grows its
storage on demand and performs thick restarts. :func:`project_out` is classical Gram–Schmidt twice
and :func:`orthonormal` a rank-revealing orthonormalisation.
"""

from __future__ import annotations

import torch


def project_out(v: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v − q qᵀ v by classical Gram–Schmidt twice, and the coefficients qᵀ v."""
    coef = q.T @ v
    v = v - q @ coef
    again = q.T @ v
    return v - q @ again, coef + again


def orthonormal(v: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """An orthonormal Q (P × r) and R (r × b) with v ≈ Q R, dropping only the directions whose
    singular values are rounding noise at ``scale``: rank-revealing (QR, then the SVD of the small
    R), so that a dropped direction never carries a part of another column, which a plain QR's
    small diagonal entry does not guarantee."""
    qv, r = torch.linalg.qr(v)
    u, sv, vh = torch.linalg.svd(r)
    keep = sv > torch.finfo(v.dtype).eps ** 0.75 * max(scale, torch.finfo(v.dtype).tiny)
    return qv @ u[:, keep], sv[keep, None] * vh[keep]


class KrylovBasis:
    r"""The basis Q = [applied | pending] in preallocated columns (grown when a probe widens the
    block) and the coefficients C with :math:`\mathcal H Q_{:, :m_a} = Q_{:, :m_t} C_{:m_t, :m_a}`.

    Q is stored column-major (each basis vector contiguous), so that the products with the applied
    part, :math:`Q_a^\top v` and :math:`Q_a c`, read only its :math:`m_a` columns and not the
    whole preallocated width: the orthogonalisation is memory-bound for large operators."""

    def __init__(self, first: torch.Tensor, max_basis: int, b: int) -> None:
        size = first.shape[0]
        self.vectors = first.new_empty(max_basis + 3 * max(b, first.shape[1]), size)  # row j: basis vector j
        self.coefficients = first.new_zeros(self.vectors.shape[0], self.vectors.shape[0])
        self.num_applied, self.num_columns = 0, first.shape[1]
        self.q[:, : self.num_columns] = first

    @property
    def q(self) -> torch.Tensor:
        """Q as a (size × columns) view of the stored vectors."""
        return self.vectors.T

    @property
    def num_pending(self) -> int:
        return self.num_columns - self.num_applied

    def pending(self) -> torch.Tensor:
        """The pending block, column-major (operators split it without a copy)."""
        return self.q[:, self.num_applied : self.num_columns]

    def applied(self) -> torch.Tensor:
        return self.q[:, : self.num_applied]

    def extend(self, hv: torch.Tensor, b: int) -> None:
        r"""Record :math:`\mathcal H Q_p` = ``hv``: its projection on the basis and the QR of the rest,
        whose orthonormal part becomes the new pending block."""
        self.num_applied = self.num_columns
        rest, coef = project_out(hv, self.applied())
        nxt, r = orthonormal(rest, float(torch.linalg.vector_norm(hv, dim=0).max()))
        drift = self.applied().T @ nxt
        if nxt.numel() and float(drift.abs().max()) > torch.finfo(nxt.dtype).eps ** 0.5:
            # severe cancellation (a nearly invariant basis, a rank-deficient operator): one more
            # pass, folded into the coefficients so that H Q_a = Q C stays exact
            nxt, r2 = orthonormal(nxt - self.applied() @ drift)
            coef, r = coef + drift @ r, r2 @ r
        self._reserve(self.num_applied + 2 * nxt.shape[1] + b, self.num_applied)
        self.num_columns = self.num_applied + nxt.shape[1]
        self.q[:, self.num_applied : self.num_columns] = nxt
        self.coefficients[: self.num_applied, self.num_applied - hv.shape[1] : self.num_applied] = coef
        self.coefficients[self.num_applied : self.num_columns, self.num_applied - hv.shape[1] : self.num_applied] = r

    def projection(self) -> torch.Tensor:
        r"""The projected matrix :math:`T = Q_a^\top\mathcal HQ_a` (symmetric up to rounding)."""
        return self.coefficients[: self.num_applied, : self.num_applied]

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Ritz values (ascending) and vectors in the basis of :math:`T` (:meth:`projection`)."""
        t = self.projection()
        return torch.linalg.eigh(0.5 * (t + t.T))

    def residuals(self, sk: torch.Tensor) -> torch.Tensor:
        r""":math:`\|\mathcal Hx - \theta x\| = \|C_p s\|` for the Ritz vectors :math:`x = Q_a s`."""
        return torch.linalg.vector_norm(
            self.coefficients[self.num_applied : self.num_columns, : self.num_applied] @ sk, dim=0
        )

    def _reserve(self, columns: int, keep: int) -> None:
        """Room for ``columns`` basis vectors (the first ``keep`` are kept when it grows)."""
        if columns > self.vectors.shape[0]:
            grow = columns + columns // 4
            fresh = self.vectors.new_empty(grow - keep, self.vectors.shape[1])
            self.vectors = torch.cat([self.vectors[:keep], fresh], dim=0)
            self.coefficients = torch.nn.functional.pad(
                self.coefficients, (0, grow - self.coefficients.shape[1], 0, grow - self.coefficients.shape[0])
            )

    def append(self, block: torch.Tensor) -> None:
        self._reserve(self.num_columns + block.shape[1], self.num_columns)
        self.q[:, self.num_columns : self.num_columns + block.shape[1]] = block
        self.num_columns += block.shape[1]

    def restart(self, theta: torch.Tensor, s: torch.Tensor, keep: torch.Tensor) -> None:
        """Thick restart: Y = Q_a S keeps the best Ritz vectors, and H Y = Y Θ + Q_p (C_p S)."""
        sp = s[:, keep]
        nk, pw = keep.numel(), self.num_pending
        pending, cp = (
            self.q[:, self.num_applied : self.num_columns].clone(),
            self.coefficients[self.num_applied : self.num_columns, : self.num_applied] @ sp,
        )
        self.q[:, :nk] = self.applied() @ sp
        self.q[:, nk : nk + pw] = pending
        self.coefficients.zero_()
        self.coefficients[:nk, :nk] = torch.diag(theta[keep])
        self.coefficients[nk : nk + pw, :nk] = cp
        self.num_applied, self.num_columns = nk, nk + pw
