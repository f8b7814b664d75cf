r"""Drop-in curvature operators for any PyTorch model: ``fd.HessianOperator`` and ``fd.GGNOperator``.

``op = fd.HessianOperator(model, loss_fn, data, params=None)`` is the Hessian of the empirical
risk :math:`\mathcal L(\theta) = \sum_b \frac{n_b}{N}\,\ell_b(\theta)` over the whole data set
(``loss_fn`` with ``reduction="mean"``; each batch is weighted by its size n_b, so unequal batches
give the full-data mean; ``reduction="sum"`` gives :math:`\sum_b \ell_b`), with respect to
``params`` (default: every parameter of the model that requires grad, in ``named_parameters()``
order), flattened row-major **in the order of ``params``**. The accepted data formats, batch sizes,
devices and reductions are those of :mod:`fastdnc.batches` (curvlinops' formats, plus
plain loss functions with ``reduction=`` given or detected).

The operator follows the model as it is **now**: every product reads the live parameters (an
optimiser step between building and using the operator is seen), and with ``params=None`` it
re-reads them from the model (a replaced ``Parameter`` is seen too).

* **Fused path**: an ``nn.Sequential`` of ``nn.Linear`` layers (all with or all without bias) and
  ``nn.ReLU`` / ``nn.Identity`` activations (optionally ending in ``nn.LogSoftmax`` with
  ``nn.NLLLoss``, Hessian only), with ``nn.MSELoss``, ``nn.CrossEntropyLoss`` (class weights, label
  smoothing, ``ignore_index``, but not weights and smoothing together), ``nn.BCEWithLogitsLoss``
  (no ``weight`` / ``pos_weight``) or ``nn.HuberLoss`` (the registry of
  :mod:`fastdnc.curvature.output_losses`, where a loss is added as one class), no module or parameter used twice, all its parameters (in any
  order), float32 or float64, one 2-D input tensor per batch, and nothing that changes what a module
  computes (no hook of any kind, no parametrisation or pruning, every ``forward`` torch's own), uses
  the analytic R-op of :class:`~fastdnc.curvature.full.LayeredHessian` with the per-sample weights
  of :mod:`fastdnc.curvature.output_losses` (cached forward state, one set of GEMMs per block of
  vectors), after checking that its output equals the model's own forward pass. ``fused=None``
  takes it exactly when every condition holds (``op.fused``; ``op.fused_reason`` says which failed);
  ``fused=True`` raises with that reason; everything else takes the generic path, exact for any
  model.
* **Caches are proved before every product**: the fused path's state and the generic path's kept
  graphs are rebuilt when the model's structure (modules, hooks, ``forward``s, modes) or any
  parameter or buffer differs bit for bit from a copy taken when they were built
  (:mod:`fastdnc.curvature.model_state`), so ``p.data`` edits, buffer updates and hooks added later
  are seen; in-place changes of the data are seen by their version counters.
* **Generic path**: through ``torch.func``. By default (``mode="auto"``) the graph of each batch's
  gradient is built once and kept (when all of them fit in half the available memory), and each
  product is one backward pass through it, the cost of autograd with a cached graph; it is rebuilt
  when a parameter changes. ``mode="linearize"`` traces the Jacobian-vector product of the gradient
  once (``torch.func.linearize``); ``"forward-over-reverse"`` (``jvp`` of ``grad``) and
  ``"reverse-over-reverse"`` (``vjp`` of ``grad``) recompute everything per product, with ``vmap``
  over the columns. The parameters are substituted wherever the model uses them (reused modules and
  tied weights are exact; see :func:`~fastdnc.curvature.functional.substituted`). Attention runs on PyTorch's math SDPA kernel
  with the fused transformer fast path off (forward-mode AD is not implemented for the flash
  kernels), so ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` work in train and eval
  mode. Where PyTorch has no forward-mode derivative of a layer or loss (Huber, …) the recomputing
  path falls back to reverse-over-reverse; losses it cannot differentiate twice at all are refused
  by name.
* ``GGNOperator`` is :math:`\sum_b \frac{n_b}{N} J_b^\top \nabla^2\ell_b J_b` (jvp, the loss
  Hessian product by double backward, vjp).
* **Refused with a reason**: BatchNorm that uses batch statistics (training mode or
  ``track_running_stats=False``): the loss of a sample then depends on the rest of its batch and
  every product would move the running statistics; call ``model.eval()``. A parameter the model
  reaches around its registered parameters (a plain list or attribute: one forward and backward of
  the first batch shows it), whose Hessian block would silently be zero. Parameters of
  ``weight_norm`` (either API): PyTorch's double backward of ``torch._weight_norm`` is wrong (its
  Hessian is not symmetric). A loss that is not a finite scalar (the error names NaN inputs).
* **Backward hooks** of modules (their own or global) change gradients; autograd double backward
  runs them and ``torch.func`` cannot, so with them the Hessian is taken by autograd (the default
  ``mode="auto"``; a custom ``autograd.Function`` without ``setup_context`` takes the same route)
  and the GGN and the other modes are refused. Gradient hooks on a parameter
  (``Tensor.register_hook``) are refused. float16 and bfloat16 take the generic path.
* ``check_deterministic=True`` (the default, as in curvlinops) evaluates the loss of the first batch
  twice (one extra forward pass) and raises :class:`NonDeterministicError` when they differ
  (dropout in training mode, random layers); :meth:`check_deterministic` compares two full products.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import grad, jvp, vjp

from ..batches import Batch
from .admission import MissingDerivativeError, NonDeterministicError
from .module_operator import MODES, ModuleOperator

__all__ = [
    "MODES",
    "GGNOperator",
    "HessianOperator",
    "MissingDerivativeError",
    "ModuleOperator",
    "NonDeterministicError",
]


class HessianOperator(ModuleOperator):
    """The Hessian of the empirical risk of any ``nn.Module`` (see the module docstring).

    Args:
        model, loss_fn, data: the model, ``loss_fn(model(X), y)``, and the batches.
        params: the parameters (any order, any subset; default all that require grad).
        mode: generic path. ``"auto"``: the gradient's graph of each batch is kept (within half
            the available memory) and every product is one backward through it; ``"linearize"``:
            ``torch.func.linearize`` traces the Jacobian-vector product of the gradient once (seconds
            to build, then faster products on convolutional models); ``"forward-over-reverse"``
            / ``"reverse-over-reverse"``: recomputed for every product (least memory). Where
            PyTorch lacks a forward-mode derivative, forward-over-reverse falls back to
            reverse-over-reverse under ``"auto"``.
        check_deterministic: one extra loss evaluation that refuses random models.
        fused: ``None`` (the fused R-op exactly when it applies), ``True`` (require it), ``False``.
        reduction: for a loss without a ``reduction`` attribute: ``"mean"`` or ``"sum"`` (default:
            detected, or refused when unclear).
        batch_size_fn: the number of samples of a batch's ``X`` (default: its leading dimension).
        num_data: N in the batch weights n_b/N of a mean (default: the samples in ``data``; curvlinops'
            argument of the same name).

    Attributes:
        recompute: ``mode="auto"`` keeps each batch's graph unless this is ``True`` (it is set when
            the graphs would not fit in memory); set it to recompute every product and keep none.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        data,
        params: Sequence[torch.Tensor] | None = None,
        *,
        mode: str = "auto",
        check_deterministic: bool = True,
        fused: bool | None = None,
        reduction: str | None = None,
        batch_size_fn: Callable | None = None,
        num_data: int | None = None,
    ) -> None:
        super().__init__(
            model, loss_fn, data, params, mode, check_deterministic, fused, reduction, batch_size_fn, num_data
        )

    def _batch_product(self, params, v, b: Batch):
        f = lambda p: self._loss(p, b)  # noqa: E731
        if self.mode != "reverse-over-reverse":
            return jvp(grad(f), (params,), (v,))[1]
        _, pull = vjp(grad(f), params)  # type: ignore[misc]  # a pair without has_aux
        return pull(v)[0]


class GGNOperator(ModuleOperator):
    """The generalised Gauss–Newton matrix :math:`J^\\top \\nabla^2_z\\ell\\, J` of any ``nn.Module``
    (arguments as for :class:`HessianOperator`)."""

    curvature = "ggn"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        data,
        params: Sequence[torch.Tensor] | None = None,
        *,
        check_deterministic: bool = True,
        fused: bool | None = None,
        reduction: str | None = None,
        batch_size_fn: Callable | None = None,
        num_data: int | None = None,
    ) -> None:
        super().__init__(
            model, loss_fn, data, params, "auto", check_deterministic, fused, reduction, batch_size_fn, num_data
        )

    def _batch_product(self, params, v, b: Batch):
        def out(p):
            return self._output(p, b)

        z, jv = jvp(out, (params,), (v,))  # type: ignore[misc]  # a pair without has_aux

        # the loss Hessian at the output is symmetric: reverse-over-reverse needs no forward-mode
        # derivative of the loss (Huber, smooth L1, … have none in PyTorch)
        def loss_at(zz: torch.Tensor) -> torch.Tensor:
            return self._apply_loss(zz, b.target)

        hz = vjp(grad(loss_at), z)[1](jv)[0]
        _, pull = vjp(out, params)  # type: ignore[misc]  # a pair without has_aux
        return pull(hz)[0]
