r"""Low-rank symmetric operators :math:`C\,\mathrm{diag}(w)\,C^\top` (Papyan's class and cross-class
terms): exact eigenpairs from a thin SVD."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .operator import CurvatureOperator, describe


class LowRankOperator(CurvatureOperator):
    r""":math:`C\,\mathrm{diag}(w)\,C^\top` for explicit columns C (P × m) and non-negative weights w (m,).

    Products cost O(P·m); ``nonzero_eigh`` and ``rank`` are exact through the thin SVD of
    :math:`C\,\mathrm{diag}(\sqrt w)`, never a P × P matrix.
    """

    def __init__(
        self,
        columns: torch.Tensor,
        weights: torch.Tensor | float = 1.0,
        block_shapes: Sequence[torch.Size] | None = None,
    ) -> None:
        if columns.ndim != 2:
            raise ValueError(f"columns must be (P, m), got shape {tuple(columns.shape)}")
        super().__init__(columns.shape[0], columns.dtype, columns.device, block_shapes)
        w = torch.as_tensor(weights, dtype=columns.dtype, device=columns.device).expand(columns.shape[1])
        if bool((w < 0).any()):
            raise ValueError("LowRankOperator needs non-negative weights")
        self.root = columns * w.sqrt()

    def gemm_flops(self, k: int = 1) -> float:
        return 2.0 * self.size * self.root.shape[1] * k

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        return self.root @ (self.root.T @ v)

    def _svd(self) -> tuple[torch.Tensor, torch.Tensor]:
        u, sv, _ = torch.linalg.svd(self.root, full_matrices=False)
        return u, sv

    def nonzero_eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The m leading eigenpairs (ascending): the squared singular values of
        :math:`C\,\mathrm{diag}(\sqrt w)` and its left singular vectors. All others are 0."""
        u, sv = self._svd()
        return sv.square().flip(0), u.flip(1)

    def rank(self, rtol: float = 1e-10) -> int:
        """Eigenvalues above ``rtol`` times the largest (and above 0)."""
        sv = self._svd()[1].square()
        return int((sv > rtol * float(sv.max())).sum()) if sv.numel() and float(sv.max()) > 0 else 0

    def diagonal(self) -> torch.Tensor:
        return self.root.square().sum(1)

    def cache_info(self) -> dict[str, str]:
        return {"root C·diag(√w)": describe(self.root)}
