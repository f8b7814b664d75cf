r"""The fused R-op behind the drop-in operators for ``nn.Sequential`` MLPs: when it computes exactly
the operator the user asked for, and the :class:`~fastdnc.curvature.full.LayeredHessian` it builds.

:func:`why_not_fused` returns ``None`` only when every condition holds (see
:mod:`fastdnc.curvature.generic`), else the first that fails, in words: the drop-in operator shows it
as ``op.fused_reason``. Besides the layers, the loss and the data, nothing may change what a module
computes: no hook of any kind, no parametrisation or pruning, every ``forward`` torch's own
(:mod:`fastdnc.curvature.model_state`), float32 or float64. :class:`FusedSequential` copies the
current weights into an :class:`~fastdnc.models.MLPHead` on all the data, builds the analytic R-op
with the per-sample weights of torch's reduction of each batch
(:mod:`fastdnc.curvature.output_losses`), maps the user's parameter order to the module order of
the R-op, and **proves** the copy: :meth:`FusedSequential.mismatch` compares the copy's output with
the model's own forward pass on every batch (anything the structural checks cannot see, a patched
``torch.nn.functional`` say, shows up there and sends the operator to the generic path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from ..batches import Batch
from ..models import MLPHead
from .full import LayeredHessian
from .model_state import foreign_forward, hooks, parametrized
from .output_losses import FUSED, OutputLoss, SoftmaxCrossEntropy


class ModuleOperator(Protocol):
    """What the fused path reads of a drop-in operator (:class:`~fastdnc.curvature.module_operator.ModuleOperator`)."""

    model: Any
    loss_fn: Callable
    batches: list[Batch]
    names: list[str]
    num_data: int
    reduction: str
    curvature: str
    size: int
    dtype: torch.dtype
    device: torch.device


def why_layers_not_fused(mods: list[nn.Module]) -> str | None:
    """``None`` for Linear, activation, Linear, …, Linear with one kind of activation (ReLU or
    Identity), no module used twice and biases on all Linear layers or on none."""
    if len({id(m) for m in mods}) != len(mods):
        return "a module is used twice in the Sequential"
    for i, mod in enumerate(mods):
        if i % 2 == 0 and type(mod) is not nn.Linear:
            return f"module {i} is {type(mod).__name__}, not Linear"
        if i % 2 == 1 and type(mod) not in (nn.ReLU, nn.Identity):
            return f"module {i} is {type(mod).__name__}, not ReLU or Identity between Linear layers"
        if type(mod) is nn.ReLU and mod.inplace:
            return "an in-place ReLU"
    if len(mods) % 2 == 0:
        return "the Sequential does not end with a Linear layer"
    if len({type(m) for m in mods[1::2]}) > 1:
        return "it mixes ReLU and Identity activations"
    if len({m.bias is None for m in mods[0::2]}) > 1:
        return "some Linear layers have biases and others do not"
    return None


def why_not_fused(op: ModuleOperator, num_named: int) -> str | None:
    """``None`` when the fused R-op computes exactly ``op``, else the first reason it does not."""
    seq, loss = op.model, op.loss_fn
    if not isinstance(seq, nn.Sequential) or len(seq) == 0:
        return "the model is not an nn.Sequential"
    if op.dtype not in (torch.float32, torch.float64):
        return f"the parameters are {op.dtype} (the fused path runs in float32 and float64)"
    why = _why_computation(seq)
    if why:
        return why
    mods = list(seq)
    if type(mods[-1]) is nn.LogSoftmax:
        if mods[-1].dim not in (1, -1) or type(loss) is not nn.NLLLoss:
            return "a final LogSoftmax is fused only over dim 1 and with NLLLoss"
        if op.curvature == "ggn":
            return "the GGN of NLLLoss after LogSoftmax is taken at the log-probabilities (generic path)"
        mods = mods[:-1]
    elif type(loss) not in FUSED:
        names = ", ".join(sorted(t.__name__ for t in FUSED))
        return f"the loss is {type(loss).__name__}, not one of {names} or NLLLoss after LogSoftmax"
    why = why_layers_not_fused(mods) or _why_inputs(op, mods, num_named)
    return why or _why_loss(op, [m for m in mods if type(m) is nn.Linear][-1].out_features)


def _why_computation(seq: nn.Sequential) -> str | None:
    """Why a module of ``seq`` may compute something other than its layer's formula."""
    found = hooks(seq)
    if found:
        return f"the model has hooks ({'; '.join(found[:3])}{'; …' if len(found) > 3 else ''})"
    if parametrized(seq):
        return f"modules {parametrized(seq)} are parametrised (torch.nn.utils.parametrize)"
    return next((why for why in map(foreign_forward, seq.modules()) if why), None)


def _why_inputs(op: ModuleOperator, mods: list[nn.Module], num_named: int) -> str | None:
    owned = [p for m in mods for p in m.parameters()]
    if len({id(p) for p in owned}) != len(owned):
        return "a parameter is shared between layers (weight tying)"
    if len(op.names) != num_named or any(not p.requires_grad for p in owned):
        return "params is a subset of the model's parameters"
    if any(len(b.args) != 1 or b.kwargs or b.args[0].ndim != 2 for b in op.batches):
        return "the inputs are not one 2-D tensor per batch"
    if not all(isinstance(b.target, torch.Tensor) for b in op.batches):
        return "the targets are not tensors"
    return None


def _fused_loss(loss: Any) -> type[OutputLoss]:
    """The OutputLoss that computes ``loss`` (NLLLoss only ever follows a LogSoftmax here)."""
    return SoftmaxCrossEntropy if type(loss) is nn.NLLLoss else FUSED[type(loss)]


def _why_loss(op: ModuleOperator, k: int) -> str | None:
    if k < 2:
        return "the model has one output (the fused head needs K >= 2)"
    targets = [b.target for b in op.batches]
    return _fused_loss(op.loss_fn).why_not(op.loss_fn, targets, [b.size for b in op.batches], k)


class FusedSequential:
    """The analytic R-op of ``op``'s model at its current weights (see the module docstring)."""

    def __init__(self, op: ModuleOperator) -> None:
        linears = [m for m in op.model if type(m) is nn.Linear]
        x = torch.cat([b.args[0] for b in op.batches]).to(device=op.device, dtype=op.dtype)
        k = linears[-1].out_features
        head = MLPHead(
            x.T.contiguous(),
            torch.zeros(x.shape[0], dtype=torch.long, device=op.device),
            [lin.out_features for lin in linears[:-1]],
            len(linears),
            num_classes=k,
            activation="relu" if any(type(m) is nn.ReLU for m in op.model) else "linear",
            weight_decay=0.0,
            bias=linears[0].bias is not None,
        )
        with torch.no_grad():
            for w, lin in zip(head.weights, linears):
                w.copy_(lin.weight)
            if head.biases is not None:
                for b, lin in zip(head.biases, linears):
                    b.copy_(lin.bias)
        self.operator = LayeredHessian(
            head, include_features=False, decay=False, curvature=op.curvature, output_loss=_output_loss(op, k)
        )
        # the user's params order as indices into the module order (the R-op's layout)
        offsets, i = {}, 0
        for name, p in op.model.named_parameters():
            offsets[name] = (i, p.numel())
            i += p.numel()
        order = torch.cat([torch.arange(offsets[n][0], offsets[n][0] + offsets[n][1]) for n in op.names])
        self.order = None if torch.equal(order, torch.arange(op.size)) else order.to(op.device)

    def mismatch(self, op: ModuleOperator) -> str | None:
        """``None`` when the copy's output equals the model's own forward pass on every batch (to
        a rounding tolerance of 1000 machine epsilons of the output's scale), else what differs."""
        z = self.operator.output_loss.output.T
        if type(op.model[-1]) is nn.LogSoftmax:
            z = z.log_softmax(1)
        with torch.no_grad():
            own = torch.cat([op.model(b.args[0].to(device=op.device, dtype=op.dtype)) for b in op.batches])
        if own.shape != z.shape:
            return f"the model's output has shape {tuple(own.shape)}, the fused layers' {tuple(z.shape)}"
        finite = torch.isfinite(z)
        if not torch.equal(finite, torch.isfinite(own)):
            return "the model's output is NaN/Inf where the fused layers' is not, or the other way round"
        scale = float(z[finite].abs().max()) if finite.any() else 0.0
        err = float((own - z)[finite].abs().max()) if finite.any() else 0.0
        if not err <= 1000 * torch.finfo(op.dtype).eps * max(scale, 1.0):
            return (
                f"the model's output differs from the fused layers' by {err:.3g} (a patched function or "
                "module changes what it computes)"
            )
        return None

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        if self.order is None:
            return self.operator.matmat(v)
        module_v = torch.empty_like(v)
        module_v[self.order] = v
        return self.operator.matmat(module_v)[self.order]


def _output_loss(op: ModuleOperator, k: int) -> Callable[[torch.Tensor], OutputLoss]:
    """The fused loss of the output with the per-sample weights of torch's reduction of each batch."""
    targets = [b.target.to(op.device) for b in op.batches]
    sizes = [b.size for b in op.batches]
    mean = op.reduction == "mean"
    return _fused_loss(op.loss_fn).from_torch(op.loss_fn, targets, sizes, k, op.num_data, mean, op.dtype)
