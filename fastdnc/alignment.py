r"""Alignment of Hessian eigenvectors and gradients with class-mean Kronecker pairs (docs/theory.md §5).

For layer l the candidate eigenvectors are the K² pairs

.. math:: v_{cc'} = \mu_c^{(l+1)} \otimes \mu_{c'}^{(l)} = \mathrm{vec}(\mu_c^{(l+1)}\mu_{c'}^{(l)\top})

(row-major vec; column ``c·K + c'`` of :func:`class_mean_pairs`), built from the class means of the
*current* features: :math:`\mu^{(l)}` of the input of layer l (post-activation for ReLU, H_1 for
l = 1) and :math:`\mu^{(l+1)}` of the input of layer l+1 (the output Z for l = L).

* :func:`eigenvector_fidelity`: :math:`f_{cc'} = (v^\top Hv)^2/(\|v\|^2\|Hv\|^2)`, 1 iff v is an
  eigenvector of the fit Hessian H of W_l (a Rayleigh-quotient test, so it is meaningful for
  degenerate eigenspaces where ``eigh``'s basis is arbitrary).
* :func:`gradient_coefficients`: :math:`\kappa_{cc'} = \langle\tilde g, v_{cc'}\rangle^2 /
  (\|\tilde g\|^2\|v_{cc'}\|^2)` with :math:`\tilde g` the fit-term gradient of W_l; at the optimum
  1/K on the diagonal and 0 off it (§3.3).
* :func:`alignment_summary`: the keys every report uses for f and κ (``f_same``, ``f_cross``,
  ``f_min``, ``kappa_same``, ``kappa_cross_max``).
* :func:`balancedness`: the relative residuals of :math:`\lambda_lW_l^\top W_l =
  \lambda_{l-1}W_{l-1}W_{l-1}^\top` and :math:`\lambda_1W_1^\top W_1 = \lambda_HH_1H_1^\top`
  (§3.4), which hold at every critical point of the linear UFM.
"""

from __future__ import annotations

import math

import torch

from .curvature.layer import layer_hessian
from .models import LayeredModel, require_layered


def _check_layer(model: LayeredModel, layer: int) -> None:
    require_layered(model, "fd.alignment", "fd.analyze(model, data, loss_fn) (f_cc' and κ_cc' of every layer)")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= model.depth:
        raise ValueError(f"layer must be an int in 1..{model.depth}, got {layer!r}")


@torch.no_grad()
def class_mean_pairs(
    model: LayeredModel, layer: int, means: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    r"""The (d_out·d_in × K²) matrix of :math:`\mu_c^{(l+1)} \otimes \mu_{c'}^{(l)}`, column c·K + c'.

    ``means`` = (:math:`\bar H_{l+1}`, :math:`\bar H_l`) overrides the model's own class means (e.g. the
    means over every rank's shard, :func:`fastdnc.distributed.global_class_means`)."""
    _check_layer(model, layer)
    out, inp = means if means is not None else (model.class_means(layer + 1), model.class_means(layer))
    k = out.shape[1]
    return torch.einsum("ac,bd->abcd", out, inp).reshape(-1, k * k)


@torch.no_grad()
def eigenvector_fidelity(model: LayeredModel, layer: int, op=None, means=None) -> torch.Tensor:
    """(K × K) :math:`f_{cc'}` against ``op`` (default: the fit Hessian of W_layer)."""
    v = class_mean_pairs(model, layer, means)
    op = layer_hessian(model, layer) if op is None else op
    hv = op @ v
    num = (v * hv).sum(0).square()
    den = v.square().sum(0) * hv.square().sum(0)
    k = model.num_classes
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(num)).reshape(k, k)


@torch.no_grad()
def gradient_coefficients(
    model: LayeredModel, layer: int, gradient: torch.Tensor | None = None, means=None
) -> torch.Tensor:
    r"""(K × K) :math:`\kappa_{cc'}` of the fit-term gradient of W_layer (or of ``gradient``)."""
    v = class_mean_pairs(model, layer, means)
    g = (
        gradient
        if gradient is not None
        else model.loss_and_gradients(decay=False).gradients[_weight_index(model, layer)]
    )
    g = g.reshape(-1)
    k = model.num_classes
    den = g.square().sum() * v.square().sum(0)
    return ((g @ v).square() / den.clamp_min(torch.finfo(v.dtype).tiny)).reshape(k, k)


def alignment_summary(f: torch.Tensor, kappa: torch.Tensor) -> dict[str, float]:
    """The package's one vocabulary for the K × K matrices f_cc' and κ_cc' (the UFM experiments,
    the DNC lens and the command line report these keys):

    * ``f_same``: the mean of f_cc (→ 1 at DNC); ``f_cross``: the mean over c ≠ c' (→ 1 at DNC);
      ``f_min``: the smallest entry;
    * ``kappa_same``: the mean of κ_cc (→ 1/K at DNC); ``kappa_cross_max``: the largest κ_cc' over
      c ≠ c' (→ 0 at DNC).

    A 1 × 1 matrix (K = 1) has no cross-class entry: ``f_cross`` is NaN and ``kappa_cross_max`` 0.
    """
    f, kappa = torch.as_tensor(f, dtype=torch.float64), torch.as_tensor(kappa, dtype=torch.float64)
    eye = torch.eye(f.shape[0], dtype=torch.bool, device=f.device)
    cross = kappa[~eye]
    return {
        "f_same": float(f[eye].mean()),
        "f_cross": float(f[~eye].mean()) if f.shape[0] > 1 else math.nan,
        "f_min": float(f.min()),
        "kappa_same": float(kappa[eye].mean()),
        "kappa_cross_max": float(cross.max()) if cross.numel() else 0.0,
    }


def _weight_index(model: LayeredModel, layer: int) -> int:
    return (layer - 1) * (2 if model.biases is not None else 1)


@torch.no_grad()
def balancedness(model: LayeredModel) -> list[float]:
    r"""Relative residual of the balancedness identity between each block and the one below it:
    entry 0 is :math:`\lambda_1W_1^\top W_1` against :math:`\lambda_HH_1H_1^\top` (UFMs only),
    entry l−1 is :math:`\lambda_lW_l^\top W_l` against :math:`\lambda_{l-1}W_{l-1}W_{l-1}^\top`."""
    require_layered(model, "fd.alignment.balancedness", "the weights' own norms (no decays are known)")
    ws = [w.detach() for w in model.weights]
    lams = model.weight_decay
    out = []
    if model.features_trainable:
        h = model.features.detach()
        out.append(_rel(lams[0] * ws[0].T @ ws[0], model.feature_decay * h @ h.T))
    for l in range(1, len(ws)):
        out.append(_rel(lams[l] * ws[l].T @ ws[l], lams[l - 1] * ws[l - 1] @ ws[l - 1].T))
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(float(torch.linalg.matrix_norm(a)), float(torch.linalg.matrix_norm(b)), torch.finfo(a.dtype).tiny)
    return float(torch.linalg.matrix_norm(a - b)) / scale
