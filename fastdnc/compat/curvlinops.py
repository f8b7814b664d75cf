"""curvlinops' ``HessianLinearOperator`` and ``GGNLinearOperator`` (version 3 signature).

``HessianLinearOperator(model_func, loss_func, params, data, progressbar=False,
check_deterministic=True, num_data=None, block_sizes=None, batch_size_fn=None)``: the same
matrix as curvlinops (its data formats, ``batch_size_fn``, and its normalisation: a
``reduction="mean"`` loss is averaged over the ``num_data`` samples with batch weights
``batch_size / num_data``, a ``"sum"`` loss summed), as a fastdnc operator with curvlinops'
surface: ``@`` on a tensor of shape (P,) or (P, K), on a list of parameter-shaped tensors (with an
optional trailing K) and on a NumPy array through ``.to_scipy(dtype=None)`` (float64 by default, as
curvlinops), ``.adjoint()``, ``.shape``, ``.dtype``, ``.device``, ``SELF_ADJOINT``,
``SUPPORTS_BLOCKS`` and the shape attributes ``_in_shape``, ``_out_shape``, ``_in_shape_flat``,
``_out_shape_flat`` that curvlinops' own tests and helpers read.

The data keep curvlinops' convention: the model is called ``model_func(X)`` with ``X`` as the
batch holds it, a dict included (fastdnc's native operators call ``model(**X)`` for a dict and
``model(*X)`` for a tuple, :mod:`fastdnc.batches`).

Differences: ``progressbar`` has no effect; the classes are fastdnc's (``isinstance`` against
curvlinops' classes is False); ``block_sizes`` gives the Hessian's block-diagonal approximation
(as in curvlinops; the GGN refuses it, as curvlinops' does) built from one fastdnc operator per
block; the fused R-op path is used where it is exact (see :mod:`fastdnc.curvature.generic`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batches import read_batches
from ..curvature.generic import GGNOperator, HessianOperator
from ..curvature.operator import CurvatureOperator


def _blocks(params: list[torch.Tensor], block_sizes: list[int] | None) -> list[list[torch.Tensor]]:
    if block_sizes is None or list(block_sizes) == [len(params)]:
        return [params]
    if sum(block_sizes) != len(params) or any(b < 1 for b in block_sizes):
        raise ValueError(f"block_sizes {block_sizes} must be positive and add up to len(params) = {len(params)}")
    out, i = [], 0
    for b in block_sizes:
        out.append(params[i : i + b])
        i += b
    return out


class _CurvlinopsOperator(CurvatureOperator):
    """curvlinops' operator surface over fastdnc operators: diag(op_1, …, op_B) over consecutive
    groups of parameters (one group without ``block_sizes``)."""

    _native: type[HessianOperator] | type[GGNOperator]
    SUPPORTS_BLOCKS = True
    SELF_ADJOINT = True

    def __init__(
        self,
        model_func: nn.Module,
        loss_func: Callable[..., torch.Tensor],
        params: list[nn.Parameter],
        data: Iterable[tuple[torch.Tensor | Any, torch.Tensor]],
        progressbar: bool = False,
        check_deterministic: bool = True,
        num_data: int | None = None,
        block_sizes: list[int] | None = None,
        batch_size_fn: Callable[[Any], int] | None = None,
    ) -> None:
        if not isinstance(model_func, nn.Module):
            raise TypeError("model_func must be an nn.Module (fastdnc substitutes its parameters)")
        if block_sizes is not None and not self.SUPPORTS_BLOCKS:
            raise ValueError("Block sizes were specified but operator does not support blocking.")
        chosen: list[torch.Tensor] = list(params)
        batches = read_batches(data, batch_size_fn, unpack=False)
        self.operators: list[CurvatureOperator] = [
            self._native(
                model_func, loss_func, batches, params=group, check_deterministic=check_deterministic, num_data=num_data
            )
            for group in _blocks(chosen, block_sizes)
        ]
        first = self.operators[0]
        shapes = [s for op in self.operators for s in op.block_shapes or []]
        super().__init__(sum(op.size for op in self.operators), first.dtype, first.device, shapes)
        self.progressbar = progressbar
        self._in_shape = self._out_shape = [torch.Size(s) for s in shapes]
        self._in_shape_flat = self._out_shape_flat = [s.numel() for s in shapes]

    def __getattr__(self, name: str) -> Any:
        """The native operator's attributes (``fused``, ``fused_reason``, …) without ``block_sizes``."""
        operators = self.__dict__.get("operators")
        if operators is None or len(operators) != 1 or name.startswith("__"):
            raise AttributeError(name)
        return getattr(operators[0], name)

    def gemm_flops(self, k: int = 1) -> float:
        return max(op.gemm_flops(k) for op in self.operators)

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        out, i = [], 0
        for op in self.operators:
            out.append(op @ v[i : i + op.size])
            i += op.size
        return torch.cat(out)

    def to_scipy(self, dtype: np.dtype | type | None = None):
        """A ``scipy.sparse.linalg.LinearOperator``; ``dtype`` defaults to float64 (curvlinops')."""
        return super().to_scipy(np.float64 if dtype is None else dtype)


class HessianLinearOperator(_CurvlinopsOperator):
    """The Hessian of the loss over ``data`` w.r.t. ``params`` (curvlinops' semantics, see the module)."""

    _native = HessianOperator


class GGNLinearOperator(_CurvlinopsOperator):
    """The generalised Gauss–Newton matrix (curvlinops' semantics, see the module; like curvlinops'
    GGN it has no block-diagonal form)."""

    _native = GGNOperator
    SUPPORTS_BLOCKS = False
