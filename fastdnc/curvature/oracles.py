"""Autograd oracles: dense Hessians, HVPs and gradients straight from ``torch.autograd``/``torch.func``.

These are slow on purpose (they materialise what the fast operators never do) and exist to check
every operator of the package; users can import them to check their own code. They work for any
:class:`~fastdnc.models.LayeredModel` (:class:`~fastdnc.models.DeepUFM`, :class:`~fastdnc.models.MLPHead`).

Flat vectors follow the package convention: the row-major vec (``reshape(-1)``) of each block of
``model.parameter_blocks(include_features)`` (``W_1[, b_1], …, W_L[, b_L]``, then ``H_1``),
concatenated. The oracles compute in the model's dtype: build the model in float64 for tight checks.
"""

from __future__ import annotations

import torch
from torch.func import hessian as _func_hessian
from torch.func import jvp, vjp

from ..models import LayeredModel
from .layout import split_flat

__all__ = [
    "block_loss",
    "dense_feature_hessian",
    "dense_ggn",
    "dense_hessian",
    "dense_layer_hessian",
    "fit_gradient",
    "flat_loss",
    "hvp_double_backward",
    "hvp_jvp_grad",
    "layer_fit_gradient",
    "num_parameters",
]


def _flat_params(model: LayeredModel, include_features: bool) -> tuple[torch.Tensor, list[torch.Size]]:
    blocks = [t.detach() for _, t in model.parameter_blocks(include_features)]
    return torch.cat([b.reshape(-1) for b in blocks]), [b.shape for b in blocks]


def flat_loss(model: LayeredModel, include_features: bool = False, decay: bool = True):
    """``(f, theta)``: the loss as a pure function of the flat parameter vector, and its current value."""
    theta, shapes = _flat_params(model, include_features)

    def f(t: torch.Tensor) -> torch.Tensor:
        return model.functional_loss(split_flat(t, shapes), include_features, decay=decay)

    return f, theta


def block_loss(model: LayeredModel, name: str, decay: bool = False):
    """``(f, x)``: the loss as a function of one block's row-major vec (``"W_l"``, ``"b_l"`` or
    ``"H_1"``; the others fixed at their current values), and that vec."""
    blocks = model.parameter_blocks(include_features=model.features_trainable)
    names = [n for n, _ in blocks]
    if name not in names:
        raise ValueError(f"unknown block {name!r}; blocks are {names}")
    idx = names.index(name)
    fixed = [t.detach() for _, t in blocks]
    shape = fixed[idx].shape

    def f(x: torch.Tensor) -> torch.Tensor:
        params = list(fixed)
        params[idx] = x.reshape(shape)
        return model.functional_loss(params, include_features=model.features_trainable, decay=decay)

    return f, fixed[idx].reshape(-1)


def num_parameters(model: LayeredModel, include_features: bool = False) -> int:
    """Length P of the flat parameter vector."""
    return sum(t.numel() for _, t in model.parameter_blocks(include_features))


def dense_hessian(model: LayeredModel, include_features: bool = False, decay: bool = True) -> torch.Tensor:
    """The full (P × P) Hessian of the loss by ``torch.func.hessian`` (forward-over-reverse).

    ``decay=False`` gives the Hessian of the fit term alone.
    """
    f, theta = flat_loss(model, include_features, decay)
    return _func_hessian(f)(theta)


def dense_layer_hessian(model: LayeredModel, layer: int, decay: bool = False) -> torch.Tensor:
    """The (P_l × P_l) Hessian with respect to ``W_l`` alone, P_l = d_out·d_in (row-major vec).

    ``decay=False`` (default) is the paper's :math:`\\mathrm{Hess}_l`, the fit term only.
    """
    if not 1 <= layer <= model.depth:
        raise ValueError(f"layer must be in 1..{model.depth}, got {layer}")
    f, x = block_loss(model, f"W_{layer}", decay)
    return _func_hessian(f)(x)


def dense_feature_hessian(model: LayeredModel, decay: bool = False) -> torch.Tensor:
    """The (dN × dN) Hessian with respect to the UFM features ``H_1`` alone (row-major vec)."""
    if not model.features_trainable:
        raise ValueError("this model's features are a fixed input, not a parameter")
    f, x = block_loss(model, "H_1", decay)
    return _func_hessian(f)(x)


def _check_vector(v: torch.Tensor, p: int, dtype: torch.dtype) -> None:
    if v.shape != (p,):
        raise ValueError(f"vector must have shape ({p},), got {tuple(v.shape)}")
    if v.dtype != dtype:
        raise TypeError(f"vector has dtype {v.dtype}, the model {dtype}")


def hvp_double_backward(
    model: LayeredModel, v: torch.Tensor, include_features: bool = False, decay: bool = True
) -> torch.Tensor:
    """Hessian-vector product by reverse-over-reverse (``autograd.grad`` with ``create_graph``)."""
    f, theta = flat_loss(model, include_features, decay)
    _check_vector(v, theta.numel(), theta.dtype)
    theta = theta.clone().requires_grad_(True)
    with torch.enable_grad():
        g = torch.autograd.grad(f(theta), theta, create_graph=True)[0]
        return torch.autograd.grad(g, theta, v)[0].detach()


def hvp_jvp_grad(
    model: LayeredModel, v: torch.Tensor, include_features: bool = False, decay: bool = True
) -> torch.Tensor:
    """Hessian-vector product by forward-over-reverse (``torch.func.jvp`` of ``grad``)."""
    f, theta = flat_loss(model, include_features, decay)
    _check_vector(v, theta.numel(), theta.dtype)
    grad_f = torch.func.grad(f)
    return jvp(grad_f, (theta,), (v,))[1]


def fit_gradient(model: LayeredModel, include_features: bool = False) -> torch.Tensor:
    """Flat gradient of the **fit term** :math:`\\tilde g` (no decay) by autograd."""
    f, theta = flat_loss(model, include_features, decay=False)
    _, g = vjp(f, theta)  # type: ignore[misc]  # torch.func.vjp without has_aux returns a pair
    return g(torch.ones((), dtype=theta.dtype, device=theta.device))[0]


def layer_fit_gradient(model: LayeredModel, layer: int) -> torch.Tensor:
    """Gradient of the fit term with respect to ``W_l`` (row-major vec), :math:`\\tilde g^{(l)}`."""
    if not 1 <= layer <= model.depth:
        raise ValueError(f"layer must be in 1..{model.depth}, got {layer}")
    f, x = block_loss(model, f"W_{layer}", decay=False)
    return torch.func.grad(f)(x)


def dense_ggn(model: LayeredModel, include_features: bool = False, decay: bool = True) -> torch.Tensor:
    """The (P × P) generalised Gauss–Newton matrix :math:`\\sum_i J_i^\\top \\Lambda_i J_i` (+ decay).

    :math:`J_i` is the Jacobian of sample i's output by ``torch.func.jacrev``; :math:`\\Lambda_i` is
    :math:`I/N` (MSE) or :math:`(\\mathrm{diag}(p_i) - p_ip_i^\\top)/N` (CE).
    """
    from ..models import forward_states

    theta, shapes = _flat_params(model, include_features)
    names = [n for n, _ in model.parameter_blocks(include_features)]

    def outputs(t: torch.Tensor) -> torch.Tensor:
        by_name = dict(zip(names, split_flat(t, shapes)))
        ws = [by_name[f"W_{l}"] for l in range(1, model.depth + 1)]
        bs = None if model.biases is None else [by_name[f"b_{l}"] for l in range(1, model.depth + 1)]
        return forward_states(ws, bs, by_name.get("H_1", model.features.detach()), model.activation).output

    jac = torch.func.jacrev(outputs)(theta)  # (K, N, P)
    z = outputs(theta)
    n = z.shape[1]
    if model.loss_type == "mse":
        out = torch.einsum("kip,kiq->pq", jac, jac) / n
    else:
        p = torch.softmax(z, dim=0)
        lam = torch.diag_embed(p.T) - p.T[:, :, None] * p.T[:, None, :]  # (N, K, K)
        out = torch.einsum("kip,ikl,liq->pq", jac, lam, jac) / n
    if decay:
        diag = torch.cat(
            [
                torch.full((s.numel(),), lam_, dtype=theta.dtype)
                for s, lam_ in zip(shapes, [_decay_of(model, nm) for nm in names])
            ]
        )
        out = out + torch.diag(diag)
    return out


def _decay_of(model: LayeredModel, name: str) -> float:
    if name.startswith("W_"):
        return model.weight_decay[int(name[2:]) - 1]
    return model.feature_decay if name == "H_1" else 0.0
