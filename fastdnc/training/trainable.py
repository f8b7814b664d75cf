"""What :func:`fastdnc.train` needs of a model, as protocols: a model is checked against them with
``isinstance`` once, never probed attribute by attribute.

* :class:`Trainable`: any ``nn.Module`` whose ``loss()`` is the objective, trained through autograd
  on its parameters that require grad (full batch).
* :class:`BatchTrainable`: a Trainable whose ``loss(columns)`` is the loss of the samples
  ``columns`` (mini-batches), e.g. :class:`~fastdnc.networks.BackboneHead`.
* :class:`ChunkedTrainable`: a BatchTrainable whose full batch is evaluated chunk by chunk.
* :class:`LayeredTrainable`: hand-differentiated models (:class:`~fastdnc.models.DeepUFM`,
  :class:`~fastdnc.models.MLPHead`): exact gradients without an autograd graph, their own list of
  trained blocks and a consistency check; the step's GEMM sizes come from their ``weights``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Trainable(Protocol):
    """A module whose ``loss()`` (a scalar tensor) is what training minimises."""

    def loss(self) -> torch.Tensor: ...


@runtime_checkable
class BatchTrainable(Protocol):
    """A module with ``loss(columns)`` over a subset of its ``num_samples`` samples."""

    accepts_columns: bool
    num_samples: int
    device: torch.device

    def loss(self, columns: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class ChunkedTrainable(BatchTrainable, Protocol):
    r"""A BatchTrainable whose full-batch loss is :math:`\sum_b (n_b/N)\,` ``loss(columns_b)`` over
    the index chunks of ``full_batch_chunks()`` (``None`` where it is not, e.g. under batch
    statistics), so that :func:`fastdnc.train` accumulates full-batch values and gradients chunk by
    chunk in memory bounded by a chunk."""

    def full_batch_chunks(self) -> list[torch.Tensor] | None: ...


@runtime_checkable
class LayeredTrainable(Protocol):
    """A hand-differentiated layered model (see the module docstring)."""

    num_samples: int
    device: torch.device
    weights: Any

    def check(self) -> None: ...

    def loss(self) -> torch.Tensor: ...

    def loss_and_gradients(self, decay: bool = True, columns: torch.Tensor | None = None) -> Any: ...

    def trainable_blocks(self) -> list[tuple[str, torch.Tensor]]: ...


def model_kind(model: Any) -> str:
    """``"layered"``, ``"batch"`` or ``"autograd"``: how :func:`fastdnc.train` steps ``model``; a
    TypeError for a model it cannot train."""
    if isinstance(model, LayeredTrainable):
        return "layered"
    if isinstance(model, BatchTrainable) and model.accepts_columns:
        return "batch"
    if isinstance(model, Trainable):
        return "autograd"
    raise TypeError(
        f"train needs a model with a loss() method (DeepUFM, MLPHead, BackboneHead, or your own nn.Module "
        f"whose loss() returns the objective); {type(model).__name__} has none"
    )
