r"""Kronecker-structured operators: :math:`c\,(O \otimes I) + s\,\mathrm{Id}` and sums of them.

Vec convention (row-major, torch ``reshape(-1)``): for a parameter block :math:`X` of shape
(p, q) = (d_out, d_in), :math:`\mathrm{vec}(a b^\top) = a \otimes b` and

.. math::

    (O \otimes I)\,\mathrm{vec}(X) = \mathrm{vec}(O\,X\,I^\top) = \mathrm{vec}(O\,X\,I)
    \quad (I \text{ symmetric}),

so the **output factor** O (p × p) acts on the rows of X (the output side of the layer) and the
**input factor** I (q × q) on its columns. For the linear MSE UFM,
:math:`\mathrm{Hess}_l = (A_{l+1}^\top A_{l+1}) \otimes (H_l H_l^\top / N)` (docs/theory.md §3.1).

Each factor is stored in the cheapest exact form, a :class:`Factor`: dense, a Gram matrix
:math:`c\,R^\top R` of a short root R (r × n, r < n), or a scaled identity. Products use the
roots: with :math:`O = A^\top A` (A is K × p) the product costs :math:`O(K(pq + q^2))` instead
of :math:`O(p^2 q + p q^2)`. :meth:`KroneckerOperator.eigh` is exact: the P = pq eigenvalues are the
products of the factor eigenvalues, and the eigenvectors :math:`u_i \otimes v_j` stay lazy
(:class:`KroneckerEigenvectors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._memory import require_dense, require_vectors
from .._threads import dense_threads, intra_op_threads
from ..kernels import dispatch
from .operator import CurvatureOperator, SumOperator, describe


class Factor:
    """A symmetric n × n Kronecker factor: ``dense`` M, ``gram`` c·RᵀR, or ``identity`` c·I_n."""

    def __init__(
        self,
        kind: str,
        n: int,
        *,
        matrix: torch.Tensor | None = None,
        root: torch.Tensor | None = None,
        scale: float = 1.0,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.kind, self.n, self.scale = kind, int(n), float(scale)
        self.matrix, self.root = matrix, root
        ref = matrix if matrix is not None else root
        self.dtype = ref.dtype if ref is not None else dtype
        self.device = ref.device if ref is not None else torch.device(device or "cpu")
        self._eigh: tuple[torch.Tensor, torch.Tensor] | None = None

    # constructors ------------------------------------------------------------------
    @classmethod
    def dense(cls, matrix: torch.Tensor) -> Factor:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"a Kronecker factor must be square, got {tuple(matrix.shape)}")
        return cls("dense", matrix.shape[0], matrix=matrix)

    @classmethod
    def gram(cls, root: torch.Tensor, scale: float = 1.0) -> Factor:
        """:math:`c\\,R^\\top R` for a root R of shape (r, n)."""
        if root.ndim != 2:
            raise ValueError(f"a Gram root must be a matrix (r, n), got {tuple(root.shape)}")
        return cls("gram", root.shape[1], root=root, scale=scale)

    @classmethod
    def identity(
        cls, n: int, scale: float = 1.0, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> Factor:
        return cls("identity", n, scale=scale, dtype=dtype, device=torch.device(device))

    @classmethod
    def of(cls, f: torch.Tensor | Factor) -> Factor:
        return f if isinstance(f, Factor) else cls.dense(f)

    # structure ---------------------------------------------------------------------
    @property
    def is_low_rank(self) -> bool:
        return self.kind == "gram" and self.root.shape[0] < self.n

    def to_dense(self) -> torch.Tensor:
        """The n × n matrix. A Gram factor whose root is not short (r ≥ n) keeps it: products
        with the n × n matrix are then cheaper than with the root."""
        if self.kind == "dense":
            return self.matrix
        if self.kind == "gram":
            if self.is_low_rank:
                return self.scale * (self.root.T @ self.root)
            if self.matrix is None:
                self.matrix = self.scale * (self.root.T @ self.root)
            return self.matrix
        return self.scale * torch.eye(self.n, dtype=self.dtype, device=self.device)

    def left(self, x: torch.Tensor) -> torch.Tensor:
        """M @ x for x of shape (..., n, m)."""
        if self.kind == "identity":
            return self.scale * x
        if self.is_low_rank:
            return self.scale * (self.root.T @ (self.root @ x))
        return self.to_dense() @ x

    def right(self, x: torch.Tensor) -> torch.Tensor:
        """x @ M for x of shape (..., m, n) (M is symmetric)."""
        if self.kind == "identity":
            return self.scale * x
        if self.is_low_rank:
            return self.scale * ((x @ self.root.T) @ self.root)
        return x @ self.to_dense()

    def diag(self) -> torch.Tensor:
        if self.kind == "dense":
            return torch.diagonal(self.matrix)
        if self.kind == "gram":
            return self.scale * self.root.square().sum(dim=0)
        return torch.full((self.n,), self.scale, dtype=self.dtype, device=self.device)

    def trace(self) -> torch.Tensor:
        return self.diag().sum()

    def eigvalsh(self) -> torch.Tensor:
        """Eigenvalues, ascending. A low-rank Gram factor needs only the r × r problem R Rᵀ."""
        if self._eigh is not None:
            return self._eigh[0]
        if self.kind == "identity":
            return torch.full((self.n,), self.scale, dtype=self.dtype, device=self.device)
        if self.is_low_rank:
            r = self.root
            ev = self.scale * torch.linalg.eigvalsh(r @ r.T)
            zeros = torch.zeros(self.n - r.shape[0], dtype=self.dtype, device=self.device)
            return torch.sort(torch.cat([ev, zeros])).values
        with intra_op_threads(dense_threads(self.n)):
            return torch.linalg.eigvalsh(self.to_dense())

    def eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (ascending) and orthonormal eigenvectors, computed once and cached."""
        if self._eigh is None:
            if self.kind == "identity":
                eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
                self._eigh = (torch.full((self.n,), self.scale, dtype=self.dtype, device=self.device), eye)
            else:
                with intra_op_threads(dense_threads(self.n)):
                    self._eigh = torch.linalg.eigh(self.to_dense())
        return self._eigh

    def cache_info(self, name: str) -> dict[str, str]:
        info = {}
        if self.matrix is not None:
            info[f"{name}.matrix"] = describe(self.matrix)
        if self.root is not None:
            info[f"{name}.root"] = describe(self.root)
        if self._eigh is not None:
            info[f"{name}.eigenvectors"] = describe(self._eigh[1])
        return info


def _unvec(v: torch.Tensor, p: int, q: int) -> torch.Tensor:
    """(P, k) columns → (k, p, q) row-major blocks."""
    return v.T.reshape(v.shape[1], p, q)


def _vec(x: torch.Tensor) -> torch.Tensor:
    """(k, p, q) → (P, k)."""
    return x.reshape(x.shape[0], -1).T


class KroneckerOperator(CurvatureOperator):
    r""":math:`c\,(O \otimes I) + s\,\mathrm{Id}` on row-major vecs of (p × q) blocks.

    Args:
        output_factor: O (p × p), a tensor or a :class:`Factor` (e.g. ``Factor.gram(A)`` for AᵀA).
        input_factor: I (q × q), likewise (e.g. ``Factor.gram(H.T, 1/N)`` for HHᵀ/N).
        scale: c. shift: s (e.g. the weight decay λ_l).
        backend: kernel backend of the dense two-sided product (see :mod:`fastdnc.kernels`).

    >>> import torch
    >>> o, i = torch.diag(torch.tensor([1.0, 2.0])), torch.diag(torch.tensor([3.0, 5.0, 7.0]))
    >>> op = KroneckerOperator(o, i, shift=0.5)
    >>> torch.allclose(op.to_dense(), torch.kron(o, i) + 0.5 * torch.eye(6))
    True
    >>> op.eigh()[0].tolist()
    [3.5, 5.5, 6.5, 7.5, 10.5, 14.5]
    """

    def __init__(
        self,
        output_factor: torch.Tensor | Factor,
        input_factor: torch.Tensor | Factor,
        scale: float = 1.0,
        shift: float = 0.0,
        backend: str = "auto",
    ) -> None:
        self.output_factor, self.input_factor = Factor.of(output_factor), Factor.of(input_factor)
        o, i = self.output_factor, self.input_factor
        if o.dtype != i.dtype or o.device != i.device:
            raise TypeError(f"factors must share dtype and device, got {o.dtype}/{o.device} and {i.dtype}/{i.device}")
        super().__init__(o.n * i.n, o.dtype, o.device, block_shapes=[torch.Size((o.n, i.n))])
        self.scale, self.shift, self.backend = float(scale), float(shift), dispatch.check_backend(backend)
        self.p, self.q = o.n, i.n

    def with_shift(self, shift: float) -> KroneckerOperator:
        """The same operator with ``shift`` added (still exact; e.g. + weight decay · Id)."""
        return KroneckerOperator(self.output_factor, self.input_factor, self.scale, self.shift + shift, self.backend)

    def __mul__(self, c):
        if isinstance(c, (int, float)):
            return KroneckerOperator(
                self.output_factor, self.input_factor, self.scale * c, self.shift * c, self.backend
            )
        return NotImplemented

    __rmul__ = __mul__

    def gemm_flops(self, k: int = 1) -> float:
        """The two GEMMs of O V I: p × p × q and p × q × q, per vector."""
        return 2.0 * self.p * self.q * max(self.p, self.q) * k

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        x = _unvec(v, self.p, self.q)
        o, i = self.output_factor, self.input_factor
        if o.is_low_rank and (not i.is_low_rank or o.root.shape[0] * self.q <= i.root.shape[0] * self.p):
            # c O X I = Rᵀ (c c_O (R X) I): three skinny GEMMs, O(r·p·q + r·q²); the scale is applied
            # to the small r × q middle and the shift fused into the last GEMM
            mid = i.right(o.root @ x) * (o.scale * self.scale)
            y = (
                torch.baddbmm(x, o.root.T.expand(x.shape[0], -1, -1), mid, beta=self.shift)
                if self.shift
                else o.root.T @ mid
            )
            return _vec(y)
        if i.is_low_rank:
            y = o.left(x @ i.root.T) @ i.root * (i.scale * self.scale)
        elif o.kind != "identity" and i.kind != "identity":
            y = dispatch.two_sided_product(o.to_dense(), x, i.to_dense(), backend=self.backend) * self.scale
        else:
            y = o.left(i.right(x)) * self.scale
        if self.shift:
            y = y + self.shift * x
        return _vec(y)

    def to_dense(self, chunk: int = 1024) -> torch.Tensor:
        self._require_dense("to_dense", 1.0)
        out = self.scale * torch.kron(self.output_factor.to_dense(), self.input_factor.to_dense())
        if self.shift:
            out.diagonal().add_(self.shift)
        return out

    def diagonal(self) -> torch.Tensor:
        d = self.scale * torch.outer(self.output_factor.diag(), self.input_factor.diag()).reshape(-1)
        return d + self.shift

    def trace(self) -> torch.Tensor:
        return self.scale * self.output_factor.trace() * self.input_factor.trace() + self.shift * self.size

    def _grid(self, vectors: bool = True) -> torch.Tensor:
        """All eigenvalues on the (p, q) grid of factor eigenpairs (``vectors=False``: values only,
        in the factors' ascending order, which is also the order of their ``eigh``)."""
        if vectors:
            lo, li = self.output_factor.eigh()[0], self.input_factor.eigh()[0]
        else:
            lo, li = self.output_factor.eigvalsh(), self.input_factor.eigvalsh()
        return self.scale * torch.outer(lo, li) + self.shift

    def eigh(self, method: str = "auto") -> tuple[torch.Tensor, KroneckerEigenvectors]:
        """All P eigenvalues (ascending), exact from the factors, and lazy eigenvectors.

        Costs two factor eigendecompositions (p³ + q³) and a sort of P numbers; ``method`` is
        accepted for the common signature (the factor route is always the exact and cheap one).
        """
        self.check_route(method)
        vals, order = torch.sort(self._grid().reshape(-1))
        return vals, KroneckerEigenvectors(self.output_factor.eigh()[1], self.input_factor.eigh()[1], order)

    def eigvalsh(self, method: str = "auto") -> torch.Tensor:
        """All P eigenvalues, ascending, without eigenvectors (r × r problems for Gram roots)."""
        self.check_route(method)
        return torch.sort(self._grid(vectors=False).reshape(-1)).values

    def solve(self, v: torch.Tensor, damping: float = 0.0) -> torch.Tensor:
        """:math:`(c\\,O \\otimes I + (s + \\delta)\\,\\mathrm{Id})^{-1} v` through the factor eigenbases.

        ``v`` has the shapes accepted by ``@``. Raises if the damped operator is singular.
        """
        lam = self._grid() + damping
        tiny = torch.finfo(self.dtype).eps * float(lam.abs().max().clamp_min(1.0)) * self.size
        if bool((lam.abs() <= tiny).any()):
            raise ValueError("the damped operator is singular (an eigenvalue is 0): increase damping")
        _, uo = self.output_factor.eigh()
        _, ui = self.input_factor.eigh()
        flat = v.reshape(self.size, -1) if v.ndim != 2 or v.shape[0] != self.size else v
        self._check_matrix(flat)
        x = _unvec(flat, self.p, self.q)
        y = uo @ ((uo.T @ x @ ui) / lam) @ ui.T
        return _vec(y).reshape(v.shape)

    def cache_info(self) -> dict[str, str]:
        return self.output_factor.cache_info("output_factor") | self.input_factor.cache_info("input_factor")


class KroneckerEigenvectors:
    """Lazy eigenvectors :math:`u_i \\otimes v_j` of a :class:`KroneckerOperator`, in the ascending
    order of its eigenvalues. Nothing of size P × P is formed unless asked for.

    ``vecs[:, idx]`` or ``vecs.columns(idx)`` gives dense columns; ``vecs.top(k)`` the eigenvectors
    of the k largest eigenvalues (largest first); ``vecs @ c`` combines columns with coefficients
    ``c`` and ``vecs.T @ x`` gives the coordinates of ``x`` in the eigenbasis, both in O(p²q + pq²).
    """

    route = "Kronecker factors"

    def __init__(self, output_vectors: torch.Tensor, input_vectors: torch.Tensor, order: torch.Tensor) -> None:
        self.uo, self.ui, self.order = output_vectors, input_vectors, order
        self.p, self.q = output_vectors.shape[0], input_vectors.shape[0]
        self.shape = (self.p * self.q, self.p * self.q)
        self.rank = self.p * self.q  # every eigenvector is formed exactly

    def columns(self, idx: torch.Tensor | Sequence[int] | slice | int) -> torch.Tensor:
        sel = self.order[idx] if not isinstance(idx, int) else self.order[idx : idx + 1]
        sel = torch.as_tensor(sel, device=self.order.device).reshape(-1)
        require_vectors(
            self.shape[0],
            sel.numel(),
            self.uo.dtype,
            self.uo.device,
            "forming eigenvectors",
            "fewer columns, or vecs @ c and vecs.T @ x (no columns formed)",
        )
        a, b = sel // self.q, sel % self.q
        return (self.uo[:, a][:, None, :] * self.ui[:, b][None, :, :]).reshape(self.p * self.q, -1)

    def __getitem__(self, key) -> torch.Tensor:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)):
            raise IndexError("index eigenvectors as vecs[:, idx]")
        return self.columns(key[1])

    def top(self, k: int) -> torch.Tensor:
        """(P, k): eigenvectors of the k largest eigenvalues, largest first."""
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.shape[0]:
            raise ValueError(f"top({k!r}): k must be an int in 0..{self.shape[0]}")
        return self.columns(torch.arange(self.order.numel() - 1, self.order.numel() - 1 - k, -1))

    def to_dense(self) -> torch.Tensor:
        itemsize = torch.empty(0, dtype=self.uo.dtype).element_size()
        require_dense(self.shape[0], itemsize, self.uo.device, "forming all eigenvectors (use columns() or top())", 1.0)
        return self.columns(slice(None))

    def __matmul__(self, c: torch.Tensor) -> torch.Tensor:
        flat = c.reshape(self.shape[0], -1)
        grid = torch.zeros(flat.shape[1], self.shape[0], dtype=flat.dtype, device=flat.device)
        grid[:, self.order] = flat.T
        y = self.uo @ grid.reshape(-1, self.p, self.q) @ self.ui.T
        return _vec(y).reshape(c.shape)

    @property
    def T(self) -> _TransposedEigenvectors:  # noqa: N802
        return _TransposedEigenvectors(self)


class _TransposedEigenvectors:
    def __init__(self, vecs: KroneckerEigenvectors) -> None:
        self.vecs = vecs

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vecs
        flat = x.reshape(v.shape[0], -1)
        coef = _vec(v.uo.T @ _unvec(flat, v.p, v.q) @ v.ui)[v.order]
        return coef.reshape(x.shape)


class KroneckerSum(SumOperator):
    r""":math:`\sum_j c_j\,(O_j \otimes I_j)` — e.g. the per-class Kronecker terms of a CE layer
    Hessian at collapse. Products, ``diagonal`` and ``trace`` are exact and structured; ``eigh``
    falls back to the dense matrix (small P)."""

    def __init__(
        self,
        terms: Sequence[KroneckerOperator | tuple[torch.Tensor | Factor, torch.Tensor | Factor]],
        backend: str = "auto",
    ) -> None:
        ops = [t if isinstance(t, KroneckerOperator) else KroneckerOperator(t[0], t[1], backend=backend) for t in terms]
        if not ops:
            raise ValueError("a KroneckerSum needs at least one term")
        shapes = {(op.p, op.q) for op in ops}
        if len(shapes) > 1:
            raise ValueError(f"all terms must act on blocks of one shape, got {sorted(shapes)}")
        super().__init__(ops)

    @property
    def terms(self) -> list[KroneckerOperator]:
        return self.ops

    def trace(self) -> torch.Tensor:
        return sum(op.trace() for op in self.ops)

    def to_dense(self, chunk: int = 1024) -> torch.Tensor:
        return sum(op.to_dense() for op in self.ops)

    def cache_info(self) -> dict[str, str]:
        info: dict[str, str] = {}
        for j, op in enumerate(self.ops):
            info.update({f"term{j}.{k}": v for k, v in op.cache_info().items()})
        return info
