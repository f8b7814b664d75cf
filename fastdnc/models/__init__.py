r"""Deep unconstrained feature models (UFMs) and MLP heads on fixed features.

Both models are the same layered map on a feature matrix :math:`H_1 \in \mathbb{R}^{d_1 \times N}`
whose **columns are samples**:

.. math::

    H_2 = W_1 H_1 + b_1, \qquad H_{l+1} = W_l\,\sigma(H_l) + b_l \;(l \ge 2), \qquad Z = H_{L+1},

with :math:`\sigma` the identity (``"linear"``) or ReLU (``"relu"``). :math:`H_1` itself is never
activated. The *input* of layer :math:`l` is :math:`\tilde h_1 = H_1` and
:math:`\tilde h_l = \sigma(H_l)` for :math:`l \ge 2`; the *pre-activations* are :math:`H_l`.
Layer indices follow the paper: ``layer=l`` means :math:`W_l`, ``model.weights[l-1]``, with
:math:`W_l` of shape ``(d_out, d_in)``. ReLU'(0) = 0 everywhere (PyTorch's convention).

The loss is a fit term plus weight decay,

.. math::

    \mathcal{L} = \underbrace{\tfrac{1}{2N}\|Z - Y\|_F^2}_{\text{MSE}}
    \;\text{or}\; \underbrace{\tfrac1N\textstyle\sum_i -\log \operatorname{softmax}(z_i)_{y_i}}_{\text{CE}}
    \;+\; \sum_l \tfrac{\lambda_l}{2}\|W_l\|_F^2 + \tfrac{\lambda_H}{2}\|H_1\|_F^2,

where :math:`Y` is the one-hot label matrix (K × N). Biases (MLP heads only) are not decayed.

* :class:`DeepUFM`: :math:`H_1` is a free parameter (the unconstrained features), columns in class
  order (sample ``i`` of class ``c`` is column ``c * n + i``), no biases.
* :class:`MLPHead`: :math:`H_1 = X` is a fixed input (e.g. a backbone's features), any labels,
  optional biases.

Initialisation: every trainable entry is drawn i.i.d. from :math:`\mathcal N(0, \sigma_0^2)` with
:math:`\sigma_0 = 1/\sqrt{d}` (``init_std`` overrides it), from a ``torch.Generator`` seeded with
``seed`` in the order :math:`W_1, \dots, W_L, H_1`, so a seed fixes the model on every device.
Biases start at zero.

Modules: :mod:`.forward` (pure forward pass, fit term, class means), :mod:`.layered` (the shared
core, :class:`LayeredModel`), :mod:`.ufm` (:class:`DeepUFM`), :mod:`.head` (:class:`MLPHead`).
"""

from .forward import (
    ACTIVATIONS,
    LOSSES,
    ForwardStates,
    LossAndGradients,
    class_means,
    fit_loss_of,
    forward_states,
)
from .head import MLPHead
from .layered import LayeredModel, require_layered
from .ufm import DeepUFM

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "DeepUFM",
    "ForwardStates",
    "LayeredModel",
    "LossAndGradients",
    "MLPHead",
    "class_means",
    "fit_loss_of",
    "forward_states",
    "require_layered",
]
