r"""The operator base shared by every curvature matrix: products, algebra, exports.

A :class:`CurvatureOperator` is a linear map on flat vectors of length P (the row-major vec of the
parameter blocks it covers, concatenated in the package order). A subclass supplies one pure
function, :meth:`CurvatureOperator._matmat`, on a (P, k) block of columns; this base provides:

* ``op @ v`` for ``v`` of shape (P,), (P, k), a parameter-shaped tensor (one block), or a list of
  parameter-shaped tensors (optionally with a trailing k); the result has the shape of ``v``;
* ``op1 + op2``, ``op - op2``, ``c * op``, ``-op``, ``op1 @ op2``, ``op.adjoint()`` / ``op.T``;
* ``to_dense()``, ``to_scipy()``, ``diagonal()``, ``trace()``, ``eigh()`` (dense fallback; exact
  overrides in structured subclasses), ``cache_info()`` (what the operator precomputed).

>>> import torch
>>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
>>> op = DenseOperator(A)
>>> (2 * op + op) @ torch.ones(2, dtype=torch.float64)
tensor([ 9., 12.], dtype=torch.float64)
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._memory import PEAK_EIGH, PEAK_EIGVALSH, peak_to_dense, require_dense
from .._threads import dense_threads, intra_op_threads, threads_for
from .layout import split_flat

CURVATURES = ("hessian", "ggn")
_NO_GRAM = "{} has no sample-space Gram: only a GramOperator has one (isinstance(op, GramOperator), gram_route)"
#: the routes of :meth:`CurvatureOperator.eigh`: the operator's best, the dense matrix, the sample Gram
ROUTES = ("auto", "dense", "gram")


def check_curvature(curvature: str) -> str:
    """``curvature`` when it is ``"hessian"`` or ``"ggn"``, else a ValueError."""
    if curvature not in CURVATURES:
        raise ValueError(f"curvature must be 'hessian' or 'ggn', got {curvature!r}")
    return curvature


def renamed_argument(value: Any, old: Any, old_name: str, new_name: str) -> Any:
    """``value``, or ``old`` (with a DeprecationWarning) when a caller still passes the argument by
    its former name ``old_name``."""
    if old is None:
        return value
    warnings.warn(f"{old_name}= is the former name of {new_name}=", DeprecationWarning, stacklevel=3)
    return old


def renamed_ggn_flag(curvature: str, old: bool | None, name: str) -> str:
    """The ``curvature`` of a call that may still pass the former boolean ``name`` (deprecated)."""
    if old is None:
        return check_curvature(curvature)
    warnings.warn(f"{name}= is deprecated: pass curvature='ggn' or 'hessian'", DeprecationWarning, stacklevel=3)
    return "ggn" if old else "hessian"


class CurvatureOperator(ABC):
    """Base class: a (P × P) linear operator with the shared algebra (see the module docstring)."""

    symmetric: bool = True
    #: which second derivative the operator is: ``"hessian"`` (the exact Hessian) or ``"ggn"``
    #: (the generalised Gauss–Newton matrix :math:`J^\top\Lambda J`, the Hessian without the terms that
    #: carry the loss gradient); operators of other matrices (sums, explicit matrices) say ``None``
    curvature: str | None = None

    def __init__(
        self, size: int, dtype: torch.dtype, device: torch.device, block_shapes: Sequence[torch.Size] | None = None
    ) -> None:
        self.size = int(size)
        self.dtype = dtype
        self.device = torch.device(device)
        self.block_shapes = None if block_shapes is None else [torch.Size(s) for s in block_shapes]
        if self.block_shapes is not None and sum(s.numel() for s in self.block_shapes) != self.size:
            raise ValueError("block shapes do not add up to the operator size")

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        """Product with a (P, k) matrix; returns (P, k). Subclasses implement this only."""

    # ----------------------------------------------------------------- shape and checks
    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device})"

    def _check_matrix(self, v: torch.Tensor) -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(v).__name__}")
        if v.dtype != self.dtype:
            raise TypeError(f"vector has dtype {v.dtype} but the operator is {self.dtype}: convert it first")
        if v.device != self.device:
            raise ValueError(f"vector is on {v.device} but the operator on {self.device}")
        return v

    # ----------------------------------------------------------------- products
    def gemm_flops(self, k: int = 1) -> float:
        """2·m·n·k of the largest GEMM of one product with ``k`` vectors: what the intra-op thread
        count is chosen by (:mod:`fastdnc._threads`: one thread for small work, whose threads would
        only wait for each other on a busy machine). Unknown (infinite: the caller's setting) by
        default; every structured operator states its own."""
        return float("inf")

    def _product(self, v: torch.Tensor) -> torch.Tensor:
        """``_matmat`` with the thread count of its size; the caller's setting is restored."""
        with intra_op_threads(threads_for(self.gemm_flops(v.shape[1] if v.ndim == 2 else 1))):
            return self._matmat(v)

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """Product with a checked (P, k) matrix."""
        self._check_matrix(v)
        if v.ndim != 2 or v.shape[0] != self.size or v.shape[1] == 0:
            raise ValueError(f"expected a matrix of shape ({self.size}, k) with k >= 1, got {tuple(v.shape)}")
        return self._product(v)

    def __matmul__(self, v: Any) -> Any:
        if isinstance(v, CurvatureOperator):
            return ProductOperator(self, v)
        if isinstance(v, (list, tuple)):
            if not v or not all(isinstance(b, torch.Tensor) for b in v):
                raise TypeError(
                    "a list or tuple multiplies an operator only as parameter-shaped tensors (one per "
                    f"block); for a vector of numbers pass a tensor of shape ({self.size},)"
                )
            return self._matmul_blocks(list(v))
        self._check_matrix(v)
        if v.ndim == 2 and v.shape[0] == self.size and v.shape[1] == 0:
            raise ValueError(f"the block of vectors has shape {tuple(v.shape)}: no columns to multiply")
        if v.ndim == 1 and v.shape[0] == self.size:
            return self._product(v[:, None])[:, 0]
        if v.ndim == 2 and v.shape[0] == self.size:
            return self._product(v)
        if self.block_shapes is not None and len(self.block_shapes) == 1:
            bs = self.block_shapes[0]
            if tuple(v.shape) == tuple(bs):
                return self._product(v.reshape(-1, 1)).reshape(bs)
            if tuple(v.shape[:-1]) == tuple(bs):
                return self._product(v.reshape(self.size, -1)).reshape(v.shape)
        expect = f"({self.size},) or ({self.size}, k)"
        if self.block_shapes is not None:
            expect += f" or parameter-shaped {[tuple(s) for s in self.block_shapes]}"
        raise ValueError(
            f"vector of shape {tuple(v.shape)} does not fit an operator of size {self.size}: expected {expect}"
        )

    def _matmul_blocks(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.block_shapes is None:
            raise ValueError("this operator has no parameter blocks: multiply it by a flat tensor")
        if len(blocks) != len(self.block_shapes):
            raise ValueError(f"expected {len(self.block_shapes)} parameter-shaped tensors, got {len(blocks)}")
        trailing = blocks[0].ndim > len(self.block_shapes[0])
        cols = []
        for i, (b, s) in enumerate(zip(blocks, self.block_shapes)):
            self._check_matrix(b)
            got = tuple(b.shape[:-1]) if trailing else tuple(b.shape)
            if got != tuple(s):
                raise ValueError(
                    f"block {i} has shape {tuple(b.shape)}, expected {tuple(s)}"
                    + (" plus a trailing k" if trailing else "")
                )
            cols.append(b.reshape(s.numel(), -1))
        out = self._product(torch.cat(cols, dim=0))
        return split_flat(out if trailing else out[:, 0], self.block_shapes)

    # ----------------------------------------------------------------- algebra
    def __add__(self, other: Any) -> CurvatureOperator:
        if isinstance(other, CurvatureOperator):
            return SumOperator([self, other])
        return NotImplemented

    def __sub__(self, other: Any) -> CurvatureOperator:
        if isinstance(other, CurvatureOperator):
            return SumOperator([self, ScaledOperator(other, -1.0)])
        return NotImplemented

    def __mul__(self, c: Any) -> CurvatureOperator:
        if isinstance(c, (int, float)):
            return ScaledOperator(self, float(c))
        return NotImplemented

    __rmul__ = __mul__

    def __neg__(self) -> CurvatureOperator:
        return ScaledOperator(self, -1.0)

    def adjoint(self) -> CurvatureOperator:
        """The adjoint (transpose); the operator itself when it is symmetric."""
        return self if self.symmetric else AdjointOperator(self)

    @property
    def T(self) -> CurvatureOperator:  # noqa: N802 - matrix notation
        return self.adjoint()

    # ----------------------------------------------------------------- exports and reductions
    def _require_dense(self, what: str, peak: float, eig: str | None = None) -> None:
        """Refuse (with the estimate) a dense result that would not fit in memory; see
        :mod:`fastdnc._memory`. ``peak`` is the measured peak over the P × P output."""
        itemsize = torch.empty(0, dtype=self.dtype).element_size()
        require_dense(self.size, itemsize, self.device, what, peak, eig)

    def to_dense(self, chunk: int = 1024) -> torch.Tensor:
        """The (P × P) matrix, built from products with blocks of ``chunk`` unit vectors."""
        self._require_dense("to_dense", peak_to_dense(self.size, chunk))
        out = torch.empty(self.size, self.size, dtype=self.dtype, device=self.device)
        for i in range(0, self.size, chunk):
            width = min(chunk, self.size - i)
            unit = torch.zeros(self.size, width, dtype=self.dtype, device=self.device)
            unit[i : i + width].fill_diagonal_(1.0)
            out[:, i : i + width] = self._product(unit)
        return out

    def diagonal(self) -> torch.Tensor:
        """The diagonal (P,). Structured operators override this with an exact formula."""
        return torch.diagonal(self.to_dense()).clone()

    def trace(self) -> torch.Tensor:
        """The trace (0-d tensor)."""
        return self.diagonal().sum()

    def sample_gram(self, group: bool = True) -> Any:
        """Deprecated on operators that have none: ``None`` (with a DeprecationWarning). Only a
        :class:`~fastdnc.curvature.gram.GramOperator` has a sample-space Gram; ask
        ``isinstance(op, GramOperator)`` or :func:`~fastdnc.curvature.gram.gram_route`."""
        warnings.warn(_NO_GRAM.format(type(self).__name__), DeprecationWarning, stacklevel=2)
        return None

    def gram_size(self) -> int | None:
        """Deprecated on operators that have no sample-space Gram: ``None`` (see :meth:`sample_gram`)."""
        warnings.warn(_NO_GRAM.format(type(self).__name__), DeprecationWarning, stacklevel=2)
        return None

    def check_route(self, method: str) -> None:
        """Raise unless :meth:`eigh` can take the route ``method`` (one of :data:`ROUTES`):
        ``"gram"`` needs a Gauss–Newton operator (:class:`~fastdnc.curvature.gram.GramOperator`)."""
        if method not in ROUTES:
            raise ValueError(f"method must be 'auto', 'dense' or 'gram', got {method!r}")
        if method == "gram":
            raise ValueError(f"{type(self).__name__} has no sample-space Gram: only Gauss–Newton operators have one")

    def _dense_peak(self, eig_peak: float) -> float:
        """The measured peak (over the P × P output) of a dense eigendecomposition whose own peak
        is ``eig_peak``: the larger of it and of :meth:`to_dense`'s. Operators that assemble their
        matrix in one piece override it."""
        return max(eig_peak, peak_to_dense(self.size, 1024))

    def eigh(self, method: str = "auto") -> tuple[torch.Tensor, Any]:
        """All eigenvalues (ascending) and eigenvectors. This is the dense route (refused with an
        estimate when it cannot fit in memory; a warning with the time above a few thousand
        unknowns); structured operators override it with exact methods (Kronecker factors, the
        sample-space Gram of :class:`~fastdnc.curvature.gram.GramOperator`: ``method``)."""
        if not self.symmetric:
            raise ValueError("eigh needs a symmetric operator")
        self.check_route(method)
        self._require_dense("eigh", self._dense_peak(PEAK_EIGH), "vectors")
        dense = self.to_dense()
        with intra_op_threads(dense_threads(self.size)):
            return torch.linalg.eigh(dense)

    def eigvalsh(self, method: str = "auto") -> torch.Tensor:
        """All eigenvalues, ascending (the routes of :meth:`eigh`, without vectors)."""
        if not self.symmetric:
            raise ValueError("eigvalsh needs a symmetric operator")
        self.check_route(method)
        self._require_dense("eigvalsh", self._dense_peak(PEAK_EIGVALSH), "values")
        dense = self.to_dense()
        with intra_op_threads(dense_threads(self.size)):
            return torch.linalg.eigvalsh(dense)

    def cache_info(self) -> dict[str, str]:
        """What the operator precomputed and keeps: ``{name: "shape dtype (bytes)"}``."""
        return {}

    def to_scipy(self, dtype: np.dtype | type | None = None):
        """A ``scipy.sparse.linalg.LinearOperator`` of NumPy ``dtype`` (default: the operator's own).
        Inputs are converted to the operator's dtype for the product and results back to the input's
        dtype."""
        from scipy.sparse.linalg import LinearOperator

        own = np.float64 if self.dtype == torch.float64 else np.float32
        adj = self.adjoint()

        def apply(op: CurvatureOperator, x: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.ascontiguousarray(x, dtype=own), device=self.device)
            out = (op @ t.reshape(self.size, -1)).reshape(x.shape).cpu().numpy()
            return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else own, copy=False)

        return LinearOperator(
            self.shape,
            matvec=lambda x: apply(self, x),
            rmatvec=lambda x: apply(adj, x),
            matmat=lambda x: apply(self, x),
            rmatmat=lambda x: apply(adj, x),
            dtype=np.dtype(own if dtype is None else dtype),
        )


def _same_space(ops: Sequence[CurvatureOperator]) -> None:
    first = ops[0]
    for op in ops[1:]:
        if op.size != first.size or op.dtype != first.dtype or op.device != first.device:
            raise ValueError(
                f"cannot combine operators of shapes/dtypes/devices {op.shape}/{op.dtype}/{op.device} "
                f"and {first.shape}/{first.dtype}/{first.device}"
            )


class DenseOperator(CurvatureOperator):
    """An explicit matrix seen as an operator."""

    def __init__(
        self, matrix: torch.Tensor, symmetric: bool | None = None, block_shapes: Sequence[torch.Size] | None = None
    ) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square, got {tuple(matrix.shape)}")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device, block_shapes)
        self.matrix = matrix
        self.symmetric = bool(torch.equal(matrix, matrix.T)) if symmetric is None else symmetric

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v

    def gemm_flops(self, k: int = 1) -> float:
        return 2.0 * self.size * self.size * k

    def to_dense(self, chunk: int = 1024) -> torch.Tensor:
        return self.matrix.clone()


class SumOperator(CurvatureOperator):
    """Σ_j op_j."""

    ops: list[CurvatureOperator]

    def __init__(self, ops: Sequence[CurvatureOperator]) -> None:
        flat: list[CurvatureOperator] = []
        for op in ops:
            flat.extend(op.ops if isinstance(op, SumOperator) else [op])
        _same_space(flat)
        super().__init__(flat[0].size, flat[0].dtype, flat[0].device, flat[0].block_shapes)
        self.ops = flat
        self.symmetric = all(op.symmetric for op in flat)

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        out = self.ops[0].matmat(v)
        for op in self.ops[1:]:
            out = out + op.matmat(v)
        return out

    def gemm_flops(self, k: int = 1) -> float:
        return max(op.gemm_flops(k) for op in self.ops)

    def diagonal(self) -> torch.Tensor:
        return torch.stack([op.diagonal() for op in self.ops]).sum(dim=0)

    def adjoint(self) -> CurvatureOperator:
        return self if self.symmetric else SumOperator([op.adjoint() for op in self.ops])


class ScaledOperator(CurvatureOperator):
    """c · op."""

    def __init__(self, op: CurvatureOperator, scale: float) -> None:
        super().__init__(op.size, op.dtype, op.device, op.block_shapes)
        self.op, self.scale = op, scale
        self.symmetric = op.symmetric

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op.matmat(v)

    def gemm_flops(self, k: int = 1) -> float:
        return self.op.gemm_flops(k)

    def diagonal(self) -> torch.Tensor:
        return self.scale * self.op.diagonal()

    def adjoint(self) -> CurvatureOperator:
        return self if self.symmetric else ScaledOperator(self.op.adjoint(), self.scale)


class ProductOperator(CurvatureOperator):
    """left @ right (not symmetric in general)."""

    symmetric = False

    def __init__(self, left: CurvatureOperator, right: CurvatureOperator) -> None:
        _same_space([left, right])
        super().__init__(left.size, left.dtype, left.device, left.block_shapes)
        self.left, self.right = left, right

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        return self.left.matmat(self.right.matmat(v))

    def adjoint(self) -> CurvatureOperator:
        return ProductOperator(self.right.adjoint(), self.left.adjoint())


class AdjointOperator(CurvatureOperator):
    """The transpose of a non-symmetric operator (through its dense matrix: small sizes only)."""

    symmetric = False

    def __init__(self, op: CurvatureOperator) -> None:
        super().__init__(op.size, op.dtype, op.device, op.block_shapes)
        self.op = op
        self._dense: torch.Tensor | None = None

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        if self._dense is None:
            self._dense = self.op.to_dense().T.contiguous()
        return self._dense @ v

    def adjoint(self) -> CurvatureOperator:
        return self.op


def describe(t: torch.Tensor) -> str:
    """``"shape dtype (bytes)"`` for :meth:`CurvatureOperator.cache_info`."""
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} ({t.numel() * t.element_size()} B)"
