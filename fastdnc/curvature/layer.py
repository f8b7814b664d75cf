r"""Exact layer-wise Hessians of UFMs and MLP heads: ``fd.layer_hessian`` and ``fd.feature_hessian``.

``layer_hessian(model, l)`` is the Hessian of the loss with respect to :math:`W_l` alone
(row-major vec, P = d_out · d_in), equal to autograd's (tested to 1e-10 in float64):

* **linear, MSE**: :math:`(A_{l+1}^\top A_{l+1}) \otimes (H_l H_l^\top/N)`
  (docs/theory.md §3.1), a :class:`~fastdnc.curvature.kronecker.KroneckerOperator` whose factors are kept
  as Gram roots :math:`A_{l+1}` (K × d) and :math:`H_l^\top/\sqrt N`, so a product costs
  O(K d²) and ``eigh`` is exact from the factors;
* **linear CE, ReLU (MSE or CE)**: the batched Gauss–Newton block
  :math:`\frac1N\sum_i (J_i^\top\Lambda_iJ_i)\otimes \tilde h_i\tilde h_i^\top` (§3.6–3.7), a
  :class:`~fastdnc.curvature.gauss_newton.BatchedGaussNewton`; for linear models the layers above
  collapse into :math:`A_{l+1}`.

``decay=False`` (default) is the paper's :math:`\mathrm{Hess}_l`, the fit term only;
``decay=True`` adds :math:`\lambda_l\,\mathrm{Id}`. ``feature_hessian`` is the same for the UFM
features :math:`H_1` (vec index a·N + i), with :math:`x_i = e_i`. The operators capture the model's
state when they are built: rebuild them after training further.

**Any other model**: ``layer_hessian(net, layer, data=(X, y), loss_fn=…)`` with ``layer`` an
``nn.Linear`` of ``net`` (the module or its dotted name) is the exact Hessian of that layer's weight
in any ``nn.Module`` (:mod:`fastdnc.curvature.module_layer`: the batched Gauss–Newton block from
captured inputs and per-sample Jacobian roots, plus the residual term where the layers above are
not piecewise linear, or the generic operator with the reason).
"""

from __future__ import annotations

import torch

from ..models import LayeredModel, require_layered
from .gauss_newton import BatchedGaussNewton, unit_loss, upstream_of
from .kronecker import Factor, KroneckerOperator
from .module_layer import module_layer_hessian
from .operator import check_curvature, renamed_argument


def layer_hessian(
    model,
    layer,
    decay: bool = False,
    backend: str = "auto",
    product: str = "auto",
    relu_prime_at_zero: float = 0.0,
    *,
    data=None,
    loss_fn=None,
    curvature: str = "hessian",
    bias: bool = False,
    reduction: str | None = None,
    mode: str | None = None,
):
    """The exact Hessian of the loss with respect to ``W_layer`` (see the module docstring).

    ``backend`` picks the kernels; ``product`` the Gauss–Newton product path (``"jacobian"`` or
    ``"rop"``, see :class:`~fastdnc.curvature.gauss_newton.BatchedGaussNewton`; ``mode=`` is its
    deprecated former name).
    ``relu_prime_at_zero`` is δ = σ′(0) for pre-activations that are exactly 0 (PyTorch's
    convention is 0; at exact DNC points the spectrum depends on it, docs/theory.md §3.7).

    For any other ``nn.Module``: ``layer`` is one of its ``nn.Linear`` layers (the module or its dotted
    name), ``data`` the batches and ``loss_fn`` the loss (as for :class:`~fastdnc.HessianOperator`);
    ``curvature="ggn"`` gives the Gauss–Newton part, ``bias=True`` the block of ``[W | b]``
    (:func:`~fastdnc.curvature.module_layer.module_layer_hessian`).

    >>> import fastdnc as fd
    >>> m = fd.DeepUFM(3, 2, 4, 3)
    >>> H = fd.layer_hessian(m, layer=2)
    >>> H.shape, type(H).__name__
    ((16, 16), 'KroneckerOperator')
    """
    if not isinstance(model, LayeredModel):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"layer_hessian needs an nn.Module, got {type(model).__name__}")
        if data is None or loss_fn is None:
            raise ValueError(
                f"layer_hessian of a {type(model).__name__} needs its data and loss: "
                "fd.layer_hessian(model, layer, data=(X, y), loss_fn=torch.nn.CrossEntropyLoss())"
            )
        if decay:
            raise ValueError("decay applies to DeepUFM / MLPHead (their λ_l); add λ·I to the operator yourself")
        return module_layer_hessian(
            model, layer, data, loss_fn, curvature=curvature, bias=bias, reduction=reduction, backend=backend
        )
    if data is not None or loss_fn is not None:
        raise ValueError(f"a {type(model).__name__} holds its own data and loss: call fd.layer_hessian(model, layer)")
    check_curvature(curvature)  # a layered model's layer Hessian is its Gauss–Newton block (§3.6): both agree
    product = renamed_argument(product, mode, "mode", "product")
    return _layered_hessian(model, layer, decay, backend, product, relu_prime_at_zero)


@torch.no_grad()
def _layered_hessian(
    model: LayeredModel, layer: int, decay: bool, backend: str, product: str, relu_prime_at_zero: float
) -> KroneckerOperator | BatchedGaussNewton:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= model.depth:
        raise ValueError(f"layer must be an int in 1..{model.depth} (W_1..W_L), got {layer!r}")
    model.check()
    st = model.states()
    x = st.inputs[layer - 1].detach()
    p = model.weights[layer - 1].shape[0]
    n = model.num_samples
    shift = model.weight_decay[layer - 1] if decay else 0.0
    if not 0.0 <= relu_prime_at_zero <= 1.0:
        raise ValueError(f"relu_prime_at_zero must be in [0, 1], got {relu_prime_at_zero}")
    upstream = upstream_of(model, st.preactivations, layer + 1, relu_prime_at_zero)
    if model.activation == "linear" and model.loss_type == "mse":
        out_factor = (
            Factor.gram(upstream[0][0]) if upstream else Factor.identity(p, dtype=model.dtype, device=model.device)
        )
        return KroneckerOperator(out_factor, Factor.gram(x.T, 1.0 / n), shift=shift, backend=backend)
    return BatchedGaussNewton(
        x,
        upstream,
        unit_loss(model, st.output.detach()),
        model.num_classes,
        p,
        n,
        shift=shift,
        backend=backend,
        product=product,
    )


@torch.no_grad()
def feature_hessian(
    model: LayeredModel, decay: bool = False, backend: str = "auto", product: str = "auto", *, mode: str | None = None
):
    r"""The exact Hessian with respect to the features :math:`H_1` (d × N, row-major vec) of a UFM or head.

    Linear MSE: :math:`(A_1^\top A_1) \otimes I_N/N`; otherwise block diagonal over samples,
    :math:`\frac1N\sum_i (J_i^\top\Lambda_iJ_i)\otimes e_ie_i^\top`. ``decay`` adds λ_H (UFMs).
    """
    require_layered(model, "fd.feature_hessian", "fd.HessianOperator(model, loss_fn, data, params=[...])")
    product = renamed_argument(product, mode, "mode", "product")
    model.check()
    st = model.states()
    d, n = model.features.shape
    shift = model.feature_decay if (decay and model.features_trainable) else 0.0
    upstream = upstream_of(model, st.preactivations, 1)
    if model.activation == "linear" and model.loss_type == "mse":
        return KroneckerOperator(
            Factor.gram(upstream[0][0]),
            Factor.identity(n, 1.0 / n, dtype=model.dtype, device=model.device),
            shift=shift,
            backend=backend,
        )
    return BatchedGaussNewton(
        None,
        upstream,
        unit_loss(model, st.output.detach()),
        model.num_classes,
        d,
        n,
        shift=shift,
        backend=backend,
        product=product,
    )
