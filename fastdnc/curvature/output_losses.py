r"""Losses of the network output for the fused R-op, with per-sample weights.

Each is :math:`\ell(Z) = \sum_i s_i\,\varphi(z_i, t_i)` over the columns :math:`z_i` (K outputs) of
:math:`Z` (K × N), with weights :math:`s_i \ge 0` that carry every reduction: a mean over a batch
of :math:`n_b` of N samples is :math:`s_i = \frac{n_b}{N}\cdot\frac{1}{n_b}`, class weights and
``ignore_index`` make :math:`s_i = \frac{n_b}{N}\, w_{y_i}/\sum_{j\in b} w_{y_j}` (0 for an
ignored sample), exactly as torch reduces each batch. The R-op needs the gradient
:math:`\partial\ell/\partial Z` and the product of the (block-diagonal) output Hessian with a
tangent :math:`\dot Z` (shape (…, K, N)):

* :class:`SquaredError`: :math:`\varphi = \tfrac12\|z - t\|^2`; gradient :math:`s(z - t)`,
  Hessian product :math:`s\dot z`.
* :class:`SoftmaxCrossEntropy`: :math:`\varphi = -\sum_k q_k \log\operatorname{softmax}(z)_k` with
  soft targets q (rows summing to 1: one-hot, or label-smoothed
  :math:`(1-\varepsilon)e_y + \varepsilon/K`); gradient :math:`s(p - q)`, Hessian product
  :math:`s\,(p\odot\dot z - p\,(p^\top\dot z))` (the softmax Hessian does not depend on q).
* :class:`SigmoidBinaryCrossEntropy`: :math:`\varphi = \sum_k -t_k\log\sigma(z_k) -
  (1-t_k)\log(1-\sigma(z_k))`; gradient :math:`s(\sigma - t)`, Hessian product
  :math:`s\,\sigma(1-\sigma)\odot\dot z`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class OutputLoss(ABC):
    """Base: ``weights`` (N,) per-sample weights s_i, ``output`` Z (K × N)."""

    def __init__(self, output: torch.Tensor, weights: torch.Tensor) -> None:
        self.output, self.weights = output, weights

    @abstractmethod
    def gradient(self) -> torch.Tensor:
        """∂ℓ/∂Z (K × N)."""

    @abstractmethod
    def hessian_product(self, zdot: torch.Tensor) -> torch.Tensor:
        """(∂²ℓ/∂Z²) Ż for Ż of shape (…, K, N)."""

    @abstractmethod
    def hessian_root(self) -> torch.Tensor:
        """:math:`L` as (K', K, N), column c of sample i's :math:`L_i` with
        :math:`L_iL_i^\top = s_i\nabla^2\varphi_i` (the sample-space Gram's output factor)."""


class SquaredError(OutputLoss):
    def __init__(self, output: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__(output, weights)
        self.targets = targets

    def gradient(self) -> torch.Tensor:
        return self.weights * (self.output - self.targets)

    def hessian_product(self, zdot: torch.Tensor) -> torch.Tensor:
        return self.weights * zdot

    def hessian_root(self) -> torch.Tensor:
        return identity_root(self.output) * self.weights.sqrt()


def identity_root(output: torch.Tensor) -> torch.Tensor:
    """The root of Λ_i = I for every column of ``output`` (K × N), as (K, K, N)."""
    k, n = output.shape
    return torch.eye(k, dtype=output.dtype, device=output.device)[:, :, None].expand(k, k, n)


def softmax_hessian_root(probs: torch.Tensor) -> torch.Tensor:
    r""":math:`L_i = \operatorname{diag}(\sqrt{p_i}) - p_i\sqrt{p_i}^\top` as (K, K, N) [column c,
    output, sample], so that :math:`L_iL_i^\top = \operatorname{diag}(p_i) - p_ip_i^\top` (as
    :math:`\sum_c p_c = 1`)."""
    s = probs.sqrt()
    eye = torch.eye(probs.shape[0], dtype=probs.dtype, device=probs.device)
    return eye[:, :, None] * s[None, :, :] - probs[None, :, :] * s[:, None, :]


def softmax_hessian_product(probs: torch.Tensor, zdot: torch.Tensor) -> torch.Tensor:
    """:math:`(\\operatorname{diag}(p) - pp^\\top)\\dot z` column by column (K along dim −2)."""
    pz = probs * zdot
    return pz - probs * pz.sum(dim=-2, keepdim=True)


class SoftmaxCrossEntropy(OutputLoss):
    def __init__(self, output: torch.Tensor, soft_targets: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__(output, weights)
        self.targets = soft_targets
        self.probs = torch.softmax(output, dim=0)

    def gradient(self) -> torch.Tensor:
        return self.weights * (self.probs - self.targets)

    def hessian_product(self, zdot: torch.Tensor) -> torch.Tensor:
        return self.weights * softmax_hessian_product(self.probs, zdot)

    def hessian_root(self) -> torch.Tensor:
        return softmax_hessian_root(self.probs) * self.weights.sqrt()


class SigmoidBinaryCrossEntropy(OutputLoss):
    def __init__(self, output: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__(output, weights)
        self.targets = targets
        self.sig = torch.sigmoid(output)

    def gradient(self) -> torch.Tensor:
        return self.weights * (self.sig - self.targets)

    def hessian_product(self, zdot: torch.Tensor) -> torch.Tensor:
        return self.weights * (self.sig * (1 - self.sig)) * zdot

    def hessian_root(self) -> torch.Tensor:
        return identity_root(self.output) * (self.weights * self.sig * (1 - self.sig)).sqrt()
