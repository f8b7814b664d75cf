r"""The layered map as pure functions: the forward pass, the fit term and class means.

:func:`forward_states` is the single forward pass used by the models, the autograd oracles and the
hand-written gradients (columns are samples; see :mod:`fastdnc.models`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

ACTIVATIONS = ("linear", "relu")
LOSSES = ("mse", "ce")


@dataclass
class ForwardStates:
    """All intermediate matrices of one forward pass (columns are samples).

    Attributes:
        preactivations: :math:`[H_1, H_2, \\dots, H_{L+1}]`; ``H_{L+1} = Z``.
        inputs: :math:`[\\tilde h_1, \\dots, \\tilde h_L]`, the input of each layer.
        output: :math:`Z` (K × N).
    """

    preactivations: list[torch.Tensor]
    inputs: list[torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        return self.preactivations[-1]


@dataclass
class LossAndGradients:
    """Loss terms (0-d tensors) and gradients in the order of ``model.trainable_blocks()``."""

    loss: torch.Tensor
    fit: torch.Tensor
    reg: torch.Tensor
    gradients: list[torch.Tensor]
    states: ForwardStates


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """σ(x): ReLU for ``"relu"``, the identity for ``"linear"``."""
    return torch.relu(x) if activation == "relu" else x


def forward_states(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor] | None,
    features: torch.Tensor,
    activation: str,
) -> ForwardStates:
    """Pure forward pass: the single implementation used by the models, the oracles and
    the analytic gradients."""
    pre = [features]
    inputs = [features]
    h = features
    for l, w in enumerate(weights):
        z = w @ h
        if biases is not None:
            z = z + biases[l][:, None]
        pre.append(z)
        if l + 1 < len(weights):
            h = activate(z, activation)
            inputs.append(h)
    return ForwardStates(pre, inputs)


def fit_loss_of(output: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    """Fit term of the loss for logits ``output`` (K × N), one-hot ``targets`` and ``labels``."""
    n = output.shape[1]
    if loss == "mse":
        return 0.5 * (output - targets).square().sum() / n
    return -(torch.log_softmax(output, dim=0) * targets).sum() / n


def class_means(h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Class means (d × K) of the columns of ``h`` (d × N) for one-hot ``targets`` (K × N)."""
    counts = targets.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every class needs at least one sample to have a mean")
    return (h @ targets.T) / counts
