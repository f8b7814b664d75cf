"""What the drop-in operators admit: the models, losses and data whose Hessian they can take exactly,
and a clear refusal (naming the module, parameter or input) for the rest.

* :func:`refuse_batch_statistics`: BatchNorm that normalises with each batch's statistics (the loss
  of a sample then depends on its batch, and every product would move the running statistics).
* :func:`refuse_wrong_derivatives`: parameters of ``weight_norm`` (either API), whose second
  derivative PyTorch computes wrongly, and gradient hooks on parameters, which no product with
  substituted parameters can reproduce.
* :func:`check_parameters_reached`: one forward and backward of a batch with the parameters
  substituted; a parameter that still receives a gradient is reached around the substitution (held
  in a plain list, say), and its Hessian block would silently be zero.
* :func:`check_loss_value`: a loss must be a finite scalar; the error names the NaN inputs.
* :func:`check_loss_deterministic`: two evaluations of a batch's loss agree (no random layers).
* :func:`raise_clearly`: PyTorch's "derivative … is not implemented" as a
  :class:`MissingDerivativeError` naming the loss or the layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..batches import require_scalar
from .model_state import weight_norm_parameters


class NonDeterministicError(RuntimeError):
    """Two evaluations on the same data gave different results."""


class MissingDerivativeError(NotImplementedError):
    """PyTorch has no (forward-mode, or second) derivative of a layer or loss of the model, or one
    that it computes wrongly."""


def raise_clearly(e: RuntimeError, loss_fn: Callable) -> None:
    """Re-raise PyTorch's "derivative for aten::…_backward is not implemented" as a clear
    NotImplementedError naming the loss or the layers; any other error unchanged."""
    text = str(e)
    if "derivative for" not in text or "is not implemented" not in text:
        raise e
    what = type(loss_fn).__name__ if "loss" in text.split("is not implemented")[0] else "a layer of this model"
    raise MissingDerivativeError(
        f"PyTorch cannot differentiate {what} twice ({text.splitlines()[0]}): there is no Hessian to take through it"
    ) from e


def refuse_batch_statistics(model: nn.Module) -> None:
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and (mod.training or not mod.track_running_stats):
            why = "is in training mode" if mod.training else "has track_running_stats=False"
            raise ValueError(
                f"{type(mod).__name__} {name or '(the model)'!r} {why}: it normalises with the "
                "statistics of each batch, so the loss of a sample depends on the rest of its batch (the "
                "Hessian then depends on how the data is batched) and every product would update its "
                "running statistics; call model.eval() to use the running statistics"
            )


def refuse_wrong_derivatives(model: nn.Module, names: Sequence[str]) -> None:
    """Refuse ``weight_norm`` parameters among ``names`` and gradient hooks on any parameter."""
    normed = set(weight_norm_parameters(model))
    wrong = [n for n in names if n in normed]
    if wrong:
        raise MissingDerivativeError(
            f"parameters {wrong} go through torch._weight_norm (weight_norm), whose second derivative "
            "PyTorch computes wrongly (its Hessian is not even symmetric): write the normalisation out, "
            "e.g. g * v / v.norm(dim=1, keepdim=True), or leave these parameters out of params"
        )
    hooked = [n for n, p in model.named_parameters() if getattr(p, "_backward_hooks", None)]
    if hooked:
        raise ValueError(
            f"parameters {hooked} have gradient hooks (Tensor.register_hook): they rewrite the gradient of "
            "that very tensor, so no product with substituted parameters can reproduce them; remove them"
        )


def check_parameters_reached(
    names: Sequence[str],
    originals: Sequence[torch.Tensor],
    loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    check_loss: Callable[[torch.Tensor], None],
) -> None:
    """Evaluate ``loss_of`` (a batch's loss as a function of substituted parameters) at leaf copies
    of ``originals`` and refuse the parameters whose original objects still receive a gradient
    (``check_loss`` vets the loss first)."""
    flags = [p.requires_grad for p in originals]
    leaves = {n: p.detach().requires_grad_() for n, p in zip(names, originals)}
    try:
        for p in originals:
            p.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_of(leaves)
            check_loss(loss)
            used = (
                torch.autograd.grad(loss, list(originals), allow_unused=True)
                if loss.requires_grad
                else [None] * len(originals)
            )
    finally:
        for p, flag in zip(originals, flags):
            p.requires_grad_(flag)
    around = [n for n, g in zip(names, used) if g is not None]
    if around:
        raise ValueError(
            f"the model uses parameters {around} without going through its modules' registered "
            "parameters (held in a plain list or attribute, or captured by a closure?): their Hessian "
            "blocks would be zero; register them (nn.ParameterList, a module attribute) or read them "
            "through the module"
        )


def check_loss_value(loss: object, model: nn.Module, data: Sequence[torch.Tensor]) -> None:
    """The loss of a batch must be a finite scalar tensor: a clear error names what it is (and which
    parameters of ``model`` or tensors of ``data`` hold NaN/Inf)."""
    loss = require_scalar(loss)
    if not bool(torch.isfinite(loss.detach()).all()):
        raise ValueError(f"the loss of the first batch is {float(loss.detach())}: {nonfinite_inputs(model, data)}")


def check_loss_deterministic(
    evaluate: Callable[[], torch.Tensor], check_loss: Callable[[torch.Tensor], None], dtype: torch.dtype
) -> None:
    """Two evaluations of a batch's loss (``evaluate``) must agree to rounding, else
    :class:`NonDeterministicError` (dropout in training mode, random layers)."""
    loss = evaluate()
    check_loss(loss)
    first, second = float(loss), float(evaluate())
    tol = 100 * torch.finfo(dtype).eps * max(abs(first), abs(second))
    if not abs(first - second) <= tol:
        raise NonDeterministicError(
            f"two evaluations of the loss on the same batch gave {first:.10g} and {second:.10g}: the model or "
            "the loss is random (dropout in training mode, random layers, ...); call model.eval() or pass "
            "check_deterministic=False if that is intended"
        )


def nonfinite_inputs(model: nn.Module, data: Sequence[torch.Tensor]) -> str:
    """Which parameters or data hold NaN/Inf, in words."""
    params = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
    bad = sum(not bool(torch.isfinite(t).all()) for t in data if t.is_floating_point())
    if params or bad:
        where = [f"parameters {params}"] if params else []
        where += [f"{bad} data tensor(s)"] if bad else []
        return f"{' and '.join(where)} hold NaN/Inf"
    return "the model or the loss produces NaN/Inf from finite inputs"
