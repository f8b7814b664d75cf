"""curvlinops' ``HessianLinearOperator`` and ``GGNLinearOperator`` (version 3 signature).

``HessianLinearOperator(model_func, loss_func, params, data, progressbar=False,
check_deterministic=True, num_data=None, block_sizes=None, batch_size_fn=None)``: the same
matrix as curvlinops (its data formats, ``batch_size_fn``, and its normalisation: a
``reduction="mean"`` loss is averaged over the ``num_data`` samples with batch weights
``batch_size / num_data``, a ``"sum"`` loss summed), as a fastdnc operator: ``@`` on a tensor of
shape (P,) or (P, K) and on a list of parameter-shaped tensors (with an optional trailing K),
``.to_scipy()``, ``.adjoint()``, ``.shape``, ``.dtype``, ``.device``.

Differences: ``progressbar`` has no effect; ``block_sizes`` gives the Hessian's block-diagonal
approximation (as in curvlinops; the GGN refuses it, as curvlinops' does) built from one fastdnc
operator per block; the fused R-op path
is used where it is exact (see :mod:`fastdnc.curvature.generic`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..curvature.generic import GGNOperator as _GGN
from ..curvature.generic import HessianOperator as _Hessian
from ..curvature.operator import CurvatureOperator


def _blocks(params: list[torch.Tensor], block_sizes: list[int] | None) -> list[list[torch.Tensor]] | None:
    if block_sizes is None or list(block_sizes) == [len(params)]:
        return None
    if sum(block_sizes) != len(params) or any(b < 1 for b in block_sizes):
        raise ValueError(f"block_sizes {block_sizes} must be positive and add up to len(params) = {len(params)}")
    out, i = [], 0
    for b in block_sizes:
        out.append(params[i : i + b])
        i += b
    return out


class _BlockDiagonal(CurvatureOperator):
    """diag(op_1, …, op_B) over consecutive groups of parameters."""

    def __init__(self, ops: list[CurvatureOperator]) -> None:
        shapes = [s for op in ops for s in op.block_shapes]
        super().__init__(sum(op.size for op in ops), ops[0].dtype, ops[0].device, shapes)
        self.ops = ops

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        out, i = [], 0
        for op in self.ops:
            out.append(op._matmat(v[i : i + op.size]))
            i += op.size
        return torch.cat(out)


def _operator(cls, model_func, loss_func, params, data, check_deterministic, num_data, block_sizes, batch_size_fn):
    if not isinstance(model_func, nn.Module):
        raise TypeError("model_func must be an nn.Module (fastdnc substitutes its parameters)")
    params = list(params)
    data = list(data) if not isinstance(data, (tuple, list)) else data
    groups = _blocks(params, block_sizes)

    def build(group):
        return cls(
            model_func,
            loss_func,
            data,
            params=group,
            check_deterministic=check_deterministic,
            num_data=num_data,
            batch_size_fn=batch_size_fn,
        )

    return build(params) if groups is None else _BlockDiagonal([build(g) for g in groups])


def HessianLinearOperator(  # noqa: N802 - curvlinops' class name, a factory here
    model_func: nn.Module,
    loss_func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    params: list[nn.Parameter],
    data: Iterable[tuple[torch.Tensor | Any, torch.Tensor]],
    progressbar: bool = False,
    check_deterministic: bool = True,
    num_data: int | None = None,
    block_sizes: list[int] | None = None,
    batch_size_fn: Callable[[Any], int] | None = None,
) -> CurvatureOperator:
    """The Hessian of the loss over ``data`` w.r.t. ``params`` (curvlinops' semantics, see the module)."""
    return _operator(
        _Hessian, model_func, loss_func, params, data, check_deterministic, num_data, block_sizes, batch_size_fn
    )


def GGNLinearOperator(  # noqa: N802 - curvlinops' class name, a factory here
    model_func: nn.Module,
    loss_func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    params: list[nn.Parameter],
    data: Iterable[tuple[torch.Tensor | Any, torch.Tensor]],
    progressbar: bool = False,
    check_deterministic: bool = True,
    num_data: int | None = None,
    block_sizes: list[int] | None = None,
    batch_size_fn: Callable[[Any], int] | None = None,
) -> CurvatureOperator:
    """The generalised Gauss–Newton matrix (curvlinops' semantics, see the module; like curvlinops'
    GGN it has no block-diagonal form)."""
    if block_sizes is not None:
        raise ValueError("Block sizes were specified but operator does not support blocking.")
    return _operator(
        _GGN, model_func, loss_func, params, data, check_deterministic, num_data, block_sizes, batch_size_fn
    )
