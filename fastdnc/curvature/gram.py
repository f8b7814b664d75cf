r"""Exact Gauss–Newton spectra in sample space (the NTK duality).

A Gauss–Newton matrix is :math:`G = c\,\Phi\Phi^\top + s\,\mathrm{Id}` with :math:`\Phi` the
(P × M) matrix of the per-sample, per-output Jacobian roots, M = N·K'. Block by block, column
(i, k) of :math:`\Phi` restricted to a weight :math:`W` (p × q, row-major vec) is
:math:`B_i e_k \otimes x_i`, with :math:`x_i` the layer input of sample i and
:math:`B_i = J_i^\top L_i` (:math:`L_iL_i^\top = \Lambda_i`; masks, the layers above and the loss
Hessian folded in). Hence the sample-space Gram

.. math::

    \mathcal K = c\,\Phi^\top\Phi = c \sum_{\text{blocks}} (R R^\top) \circ (X^\top X \otimes \mathbf 1_{K'\times K'}),

a Hadamard product of two Grams per block (R the roots as an (N·K') × p matrix; a bias has
:math:`x_i = 1`, the features :math:`x_i = e_i`), has the same non-zero eigenvalues as
:math:`c\,\Phi\Phi^\top`, and an eigenpair :math:`(\sigma, u)` of :math:`\mathcal K` gives the
unit eigenvector :math:`v = \sqrt c\,\Phi u/\sqrt\sigma` of G with eigenvalue :math:`\sigma + s`.
The other P − M eigenvalues are exactly s. Cost: :math:`M^2\sum_b p_b + N^2 q_b` flops and one
M × M eigendecomposition, never a P × P matrix nor :math:`\Phi` itself.

**Identical samples** (a collapsed UFM: equal feature columns and activation patterns) have equal
columns of :math:`\Phi`; a group of m of them is replaced by one sample with its roots times
:math:`\sqrt m`, which leaves :math:`\Phi\Phi^\top` unchanged (M shrinks m-fold). Samples are
grouped when their inputs and roots agree to :data:`GROUP_RTOL` (1000 machine epsilons) relative to
the largest input and root of the block: within-class columns that differ by rounding (1e-17 after a
product of layers) are one sample, while any difference the data resolves keeps them apart.
Grouping moves the eigenvalues of G by at most :attr:`SampleGram.grouping_bound` (Weyl's
inequality on :math:`\sum_i \phi_i\phi_i^\top - m\,\phi_g\phi_g^\top`, computed from the
merged samples themselves: 0 when they were bitwise equal).

:meth:`SampleGram.eigh` returns **all P eigenvalues** (ascending, the P − rank ones equal to the
shift included) and :class:`GramEigenvectors`, lazy eigenvectors for the eigenvalues above the
numerical null space (those of the null space are not unique and are not formed).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from .._memory import require_memory, require_vectors
from .._threads import dense_threads, intra_op_threads
from ..kernels import dispatch
from .operator import CurvatureOperator

GROUP_RTOL = 1000  # machine epsilons: samples this close (relative to the block's scale) are one


def _representatives(signature: torch.Tensor, rtol: float) -> torch.Tensor:
    """For every row, the first row within ``rtol`` of it in every coordinate (rows are compared
    within buckets of a grid a million times coarser, so that rounding never splits equal rows
    across a boundary of the fine tolerance)."""
    n = signature.shape[0]
    coarse = torch.round(signature / (1e6 * rtol)).to(torch.int64)
    _, bucket, sizes = torch.unique(coarse, dim=0, return_inverse=True, return_counts=True)
    rep = torch.arange(n, device=signature.device)
    for b in torch.nonzero(sizes > 1).flatten().tolist():
        rows = torch.nonzero(bucket == b).flatten()
        free = rows
        while free.numel():
            near = (signature[free] - signature[free[0]]).abs().amax(dim=1) <= rtol
            rep[free[near]] = free[0]
            free = free[~near]
    return rep


def _merge_bound(blocks: list[GramBlock], rep: torch.Tensor) -> float:
    """Σ_i ‖φ_i − φ_r(i)‖(‖φ_i‖ + ‖φ_r(i)‖) for samples i merged into the representative r(i): a bound
    on ‖Σ_i φ_iφ_iᵀ − φ_rφ_rᵀ‖ (per-sample column blocks φ_i = [B_i ⊗ x_i], Frobenius norms)."""
    own = torch.stack([b.roots.square().sum((1, 2)) * b.inputs.square().sum(0) for b in blocks]).sum(0)
    # ‖r⊗x − r'⊗x'‖ ≤ ‖r − r'‖‖x‖ + ‖r'‖‖x − x'‖ (no cancellation between nearly equal samples)
    norm = torch.linalg.vector_norm
    diff = torch.stack(
        [
            norm(b.roots - b.roots[rep], dim=(1, 2)) * norm(b.inputs, dim=0)
            + norm(b.roots[rep], dim=(1, 2)) * norm(b.inputs - b.inputs[:, rep], dim=0)
            for b in blocks
        ]
    ).sum(0)
    return float((diff * (own.sqrt() + own[rep].sqrt())).sum())


@dataclass
class GramBlock:
    """One parameter block's share of :math:`\\Phi`: ``roots`` (N, K', p) with sample i's
    :math:`B_i^\\top`, and ``inputs`` X (q × N), or ``None`` for :math:`x_i = e_i` (q = N)."""

    roots: torch.Tensor
    inputs: torch.Tensor | None

    @property
    def shape(self) -> tuple[int, int]:
        """The block's (p, q)."""
        n = self.roots.shape[0]
        return self.roots.shape[2], n if self.inputs is None else self.inputs.shape[0]

    def input_gram(self) -> torch.Tensor:
        if self.inputs is None:
            return torch.eye(self.roots.shape[0], dtype=self.roots.dtype, device=self.roots.device)
        return self.inputs.T @ self.inputs

    def columns(self, u: torch.Tensor) -> torch.Tensor:
        """:math:`\\Phi_b u` for u (m, N, K') as (m, p·q): :math:`\\sum_i (B_i u_i) x_i^\\top` row-major."""
        y = torch.einsum("ikp,jik->jpi", self.roots, u)
        if self.inputs is not None:
            y = y @ self.inputs.T
        return y.reshape(u.shape[0], -1)

    def restricted(self, rows: torch.Tensor, weights: torch.Tensor) -> GramBlock:
        """The samples ``rows``, their roots scaled by ``weights``."""
        inputs = None if self.inputs is None else self.inputs[:, rows]
        return GramBlock(self.roots[rows] * weights[:, None, None], inputs)


class SampleGram:
    """:math:`\\mathcal K = c\\,\\Phi^\\top\\Phi` of :math:`G = c\\,\\Phi\\Phi^\\top + s\\,\\mathrm{Id}`
    (see the module docstring); ``blocks`` in the order of the operator's flat vector."""

    def __init__(self, blocks: list[GramBlock], scale: float, shift: float, group: bool = True) -> None:
        self.scale, self.shift = float(scale), float(shift)
        self.num_samples = blocks[0].roots.shape[0]
        self.multiplicity: torch.Tensor | None = None
        self.grouping_bound = 0.0  # how far grouping can move an eigenvalue of G (Weyl)
        self.order: torch.Tensor | None = None  # a permutation of the rows of the eigenvectors
        if group and all(b.inputs is not None for b in blocks):
            blocks = self._grouped(blocks)
        self.blocks = blocks
        self.size = sum(p * q for p, q in (b.shape for b in blocks))
        self.dim = blocks[0].roots.shape[0] * blocks[0].roots.shape[1]

    def _grouped(self, blocks: list[GramBlock]) -> list[GramBlock]:
        """Merge samples whose inputs and roots agree to :data:`GROUP_RTOL` of the block's scale."""
        n = self.num_samples
        rtol = GROUP_RTOL * torch.finfo(blocks[0].roots.dtype).eps
        signature = torch.cat(
            [t / (float(t.abs().max()) or 1.0) for b in blocks for t in (b.roots.reshape(n, -1), b.inputs.T)], dim=1
        )
        rep = _representatives(signature, rtol)
        first, inverse, counts = torch.unique(rep, return_inverse=True, return_counts=True)
        if counts.numel() == n:
            return blocks
        self.multiplicity = counts
        self.grouping_bound = self.scale * _merge_bound(blocks, first[inverse])
        weights = counts.to(blocks[0].roots.dtype).sqrt()
        return [b.restricted(first, weights) for b in blocks]

    def matrix(self) -> torch.Tensor:
        """:math:`\\mathcal K` (M × M), accumulated block by block (one M × M temporary)."""
        ref = self.blocks[0].roots
        require_memory(
            3 * self.dim**2 * ref.element_size(),
            f"the sample-space Gram ({self.dim} × {self.dim})",
            ref.device,
            instead="method='dense' or lanczos",
        )
        out = torch.zeros(self.dim, self.dim, dtype=ref.dtype, device=ref.device)
        for b in self.blocks:
            dispatch.gn_gram(b.roots, b.input_gram(), self.scale, out)
        return out

    def eigh(self, vectors: bool = True) -> tuple[torch.Tensor, GramEigenvectors | None]:
        """All P eigenvalues of G (ascending) and, with ``vectors``, its lazy eigenvectors."""
        k = self.matrix()
        with intra_op_threads(dense_threads(self.dim)):
            sigma, u = torch.linalg.eigh(k) if vectors else (torch.linalg.eigvalsh(k), None)
        kept = sigma[-min(self.dim, self.size) :]  # rank ≤ min(M, P)
        zeros = torch.zeros(self.size - kept.numel(), dtype=sigma.dtype, device=sigma.device)
        values = torch.sort(torch.cat([zeros, kept])).values + self.shift
        if u is None:
            return values, None
        tol = (
            torch.finfo(sigma.dtype).eps * self.dim * float(sigma.abs().max().clamp_min(torch.finfo(sigma.dtype).tiny))
        )
        rank = min(int((kept > tol).sum()), self.size)
        return values, GramEigenvectors(self, sigma[sigma.numel() - rank :], u[:, u.shape[1] - rank :])

    def vectors(self, sigma: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """:math:`\\sqrt c\\,\\Phi u/\\sqrt\\sigma` for the Gram eigenpairs (σ, u): (P × m), unit columns."""
        m = u.shape[1]
        if m == 0:
            return u.new_zeros(self.size, 0)
        # the blocks' columns, their concatenation and the scaled transpose
        require_vectors(
            self.size, 3 * m, u.dtype, u.device, "forming eigenvectors from the sample-space Gram", "fewer columns"
        )
        coords = u.T.reshape(m, self.blocks[0].roots.shape[0], -1)
        out = torch.cat([b.columns(coords) for b in self.blocks], dim=1)
        out = (out * (self.scale**0.5 / sigma.sqrt())[:, None]).T
        return out if self.order is None else out[self.order]


class GramEigenvectors:
    """Lazy eigenvectors of a Gauss–Newton operator from its :class:`SampleGram`, for the ``rank``
    eigenvalues above the numerical null space, which are the last ``rank`` of the ascending list.

    ``vecs.top(k)`` gives the eigenvectors of the k largest eigenvalues (largest first) as a (P × k)
    tensor, ``vecs.columns(idx)`` those at positions ``idx`` of the ascending list, and
    ``vecs[:, idx]`` the same. A position in the null space (eigenvalue = the shift) raises: those
    eigenvectors are not unique and the Gram route does not form them.
    """

    route = "sample-space Gram"

    def __init__(self, gram: SampleGram, sigma: torch.Tensor, u: torch.Tensor) -> None:
        self.gram, self.sigma, self.u = gram, sigma, u
        self.rank = sigma.numel()
        self.shape = (gram.size, gram.size)

    def top(self, k: int) -> torch.Tensor:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.rank:
            raise ValueError(f"top({k}): the Gram route has eigenvectors for the {self.rank} non-null eigenvalues")
        idx = torch.arange(self.rank - 1, self.rank - 1 - k, -1)
        return self.gram.vectors(self.sigma[idx], self.u[:, idx])

    def columns(self, idx) -> torch.Tensor:
        pos = torch.as_tensor(idx, dtype=torch.long).reshape(-1) % self.gram.size
        local = pos - (self.gram.size - self.rank)
        if bool((local < 0).any()):
            raise ValueError(
                "an eigenvector of the null space (eigenvalue = the shift) is not unique and the Gram route does "
                "not form it; use eigh(method='dense') for a basis of it"
            )
        return self.gram.vectors(self.sigma[local], self.u[:, local])

    def __getitem__(self, key) -> torch.Tensor:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)):
            raise TypeError("index eigenvectors as vecs[:, idx]")
        idx = key[1]
        if isinstance(idx, slice):
            idx = range(*idx.indices(self.gram.size))
        return self.columns(list(idx) if not isinstance(idx, int) else [idx])


class GramOperator(CurvatureOperator):
    """An operator that may have a sample-space Gram (Gauss–Newton blocks, GGNs; a Hessian operator
    of the same family has none). :meth:`eigh` and :meth:`eigvalsh` take the route that
    :func:`gram_route` picks, else the dense route; the spectral layer asks :func:`gram_route` too."""

    @abstractmethod
    def gram_size(self) -> int | None:
        """M = N·K', the size of :meth:`sample_gram` before grouping (``None``: this one has none)."""

    @abstractmethod
    def why_no_gram(self) -> str:
        """Why :meth:`gram_size` is ``None`` (for the error of ``method="gram"``)."""

    @abstractmethod
    def sample_gram(self, group: bool = True) -> SampleGram | None:
        """The sample-space Gram (``None`` where :meth:`gram_size` is); ``group`` merges samples
        equal up to rounding (see the module docstring)."""

    def check_route(self, method: str) -> None:
        gram_route(self, method)

    def eigh(self, method: str = "auto") -> tuple[torch.Tensor, Any]:
        gram = gram_route(self, method) if self.symmetric else None
        return gram.eigh() if gram is not None else super().eigh("dense")

    def eigvalsh(self, method: str = "auto") -> torch.Tensor:
        gram = gram_route(self, method) if self.symmetric else None
        return gram.eigh(vectors=False)[0] if gram is not None else super().eigvalsh("dense")


def gram_route(op: CurvatureOperator, method: str = "auto") -> SampleGram | None:
    """The sample-space Gram through which ``op``'s exact spectrum is computed, or ``None`` for
    another route: ``"gram"`` requires one (an error says why there is none), ``"auto"`` takes it
    when M < P after grouping equal samples (fewer flops and less memory than the P × P route),
    ``"dense"`` never does. Operators that are not :class:`GramOperator` have none."""
    if not isinstance(op, GramOperator):
        op.check_route(method)
        return None
    CurvatureOperator.check_route(op, "dense" if method == "gram" else method)  # the one check of the name
    m = None if method == "dense" else op.gram_size()
    if method == "gram" and m is None:
        raise ValueError(f"{type(op).__name__} has no sample-space Gram: {op.why_no_gram()}")
    if m is None:
        return None
    gram = op.sample_gram()
    if method == "gram" or m < op.size:
        return gram
    return gram if gram is not None and gram.dim < op.size else None  # equal samples may shrink it below P


def layered_blocks(
    weights: list[torch.Tensor],
    inputs: list[torch.Tensor],
    masks: list[torch.Tensor | None] | None,
    output_root: torch.Tensor,
    bias: bool,
    include_features: bool,
) -> list[GramBlock]:
    """The blocks ``W_1[, b_1], …, W_L[, b_L][, H_1]`` of a layered model's GGN.

    ``output_root`` (K', K, N) holds the columns of every :math:`L_i` (the weights and the 1/N of
    a mean folded in); it is pulled back through :math:`W_l^\\top` and the masks
    (``masks[l]``: σ' of the pre-activation whose activation is ``inputs[l]``, or ``None``) once,
    giving every layer's roots on the way. A bias has :math:`x_i = 1`, the features
    :math:`x_i = e_i`.
    """
    depth, n = len(weights), output_root.shape[2]
    roots: list[torch.Tensor] = [output_root] * depth
    u = output_root
    for l in range(depth - 1, -1, -1):
        roots[l] = u.permute(2, 0, 1)
        u = weights[l].T @ u
        if masks is not None and masks[l] is not None:
            u = u * masks[l]
    ones = torch.ones(1, n, dtype=output_root.dtype, device=output_root.device)
    blocks = []
    for l in range(depth):
        blocks.append(GramBlock(roots[l], inputs[l]))
        if bias:
            blocks.append(GramBlock(roots[l], ones))
    if include_features:
        blocks.append(GramBlock(u.permute(2, 0, 1), None))
    return blocks
