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
* :class:`Huber`: :math:`\varphi = \sum_k h_\delta(z_k - t_k)` with :math:`h_\delta(r) = \tfrac12 r^2`
  for :math:`|r| \le \delta`, else :math:`\delta(|r| - \tfrac12\delta)`; gradient
  :math:`s\,\mathrm{clip}(z - t, \pm\delta)`, Hessian product :math:`s\,[|z - t| \le \delta]\odot\dot z`
  (torch's own second derivative at :math:`|r| = \delta`).

**Adding a loss** is one class: subclass :class:`OutputLoss` (gradient, Hessian product, root) and
decorate it with :func:`fuses` and the ``torch.nn`` loss types it computes exactly, implementing
:meth:`OutputLoss.from_torch` (the loss of Z with torch's per-sample weights of each batch's
reduction) and, where some settings of that loss are not covered, :meth:`OutputLoss.why_not`. The
drop-in operators then take the fused R-op for ``nn.Sequential`` MLPs with that loss
(:mod:`fastdnc.curvature.fused`), and every other model keeps the exact generic path.

The layered models' own fit terms (MSE and CE of UFMs and MLP heads) are two of these losses
(:func:`model_loss`): the full Hessian (:mod:`fastdnc.curvature.full`) and the Gauss–Newton layer
blocks (:mod:`fastdnc.curvature.gauss_newton`) read Λ and its root from an :class:`OutputLoss` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

#: the torch.nn loss types the fused R-op computes, and the OutputLoss of each (see :func:`fuses`)
FUSED: dict[type, type[OutputLoss]] = {}


def fuses(*torch_losses: type) -> Callable[[type[OutputLoss]], type[OutputLoss]]:
    """Class decorator: the fused R-op computes the ``torch_losses`` (exact types) with this class."""

    def register(cls: type[OutputLoss]) -> type[OutputLoss]:
        for t in torch_losses:
            FUSED[t] = cls
        return cls

    return register


def elementwise(
    targets: Sequence[torch.Tensor], num_data: int, k: int, mean: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets T (K × N) of a loss over every output entry, and its per-sample weights: a mean
    over the N·K entries of all the batches is 1/(N·K) per entry, a sum 1."""
    target = torch.cat(list(targets)).T.to(dtype).contiguous()
    per = torch.full((target.shape[1],), 1.0 / (num_data * k) if mean else 1.0, dtype=dtype, device=target.device)
    return target, per


class OutputLoss(ABC):
    """Base: ``weights`` (N,) per-sample weights s_i, ``output`` Z (K × N)."""

    def __init__(self, output: torch.Tensor, weights: torch.Tensor) -> None:
        self.output, self.weights = output, weights

    def cached(self) -> dict[str, torch.Tensor]:
        """The tensors this loss holds (output, targets, weights, and e.g. the softmax probabilities)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    @classmethod
    def why_not(cls, loss: Any, targets: Sequence[torch.Tensor], sizes: Sequence[int], k: int) -> str | None:
        """``None`` when this class computes ``loss`` exactly on these per-batch targets (for
        batches of ``sizes`` samples and K = ``k`` outputs), else the reason. The default asks for
        targets of the output's shape."""
        if any(tuple(t.shape) != (n, k) for t, n in zip(targets, sizes, strict=True)):
            return f"{type(loss).__name__} targets do not have the output's shape (no broadcasting on the fused path)"
        return None

    @classmethod
    @abstractmethod
    def from_torch(
        cls,
        loss: Any,
        targets: Sequence[torch.Tensor],
        sizes: Sequence[int],
        k: int,
        num_data: int,
        mean: bool,
        dtype: torch.dtype,
    ) -> Callable[[torch.Tensor], OutputLoss]:
        """The loss of Z (K × N, the batches side by side) with the per-sample weights of torch's
        reduction of each batch (``mean``: the batch means weighted by n_b/N, else sums)."""

    @abstractmethod
    def gradient(self) -> torch.Tensor:
        """∂ℓ/∂Z (K × N)."""

    @abstractmethod
    def hessian_product(self, zdot: torch.Tensor) -> torch.Tensor:
        """(∂²ℓ/∂Z²) Ż for Ż of shape (…, K, N)."""

    @abstractmethod
    def hessian_root(self) -> torch.Tensor:
        r""":math:`L` as (K', K, N), column c of sample i's :math:`L_i` with
        :math:`L_iL_i^\top = s_i\nabla^2\varphi_i` (the sample-space Gram's output factor)."""


@fuses(nn.MSELoss)
class SquaredError(OutputLoss):
    @classmethod
    def from_torch(cls, loss, targets, sizes, k, num_data, mean, dtype):
        # MSELoss is Σ (z − t)² / (NK) (mean) or Σ (z − t)²: ½‖·‖² with weights 2/(NK) or 2
        target, per = elementwise(targets, num_data, k, mean, dtype)
        return lambda z: cls(z, target, 2 * per)

    def __init__(self, output: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__(output, weights)
        self.targets = targets

    def gradient(self) -> torch.Tensor:
        return self.weights * (self.output - self.targets)

    def hessian_product(self, zdot: torch.Tensor) -> torch.Tensor:
        return self.weights * zdot

    def hessian_root(self) -> torch.Tensor:
        return identity_root(self.output) * self.weights.sqrt()


def model_loss(model: Any, output: torch.Tensor, weight: float | None = None) -> OutputLoss:
    r"""A layered model's own fit term at its output Z (K × N) against its targets Y (K × N):
    :math:`\tfrac12\|z_i - y_i\|^2` (``loss_type`` ``"mse"``) or
    :math:`-y_i^\top\log\operatorname{softmax}(z_i)` (``"ce"``), each sample weighted by
    ``weight`` (default 1/N: the model's mean loss)."""
    n = output.shape[1]
    s = torch.full((n,), 1.0 / n if weight is None else weight, dtype=output.dtype, device=output.device)
    cls = SquaredError if model.loss_type == "mse" else SoftmaxCrossEntropy
    return cls(output, model.targets.to(output.dtype), s)


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


def class_weights(loss: Any, labels: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """w_{y_i} of a cross-entropy or NLL loss, 0 for an ignored sample."""
    valid = labels != loss.ignore_index
    w = (
        torch.ones(k, dtype=dtype, device=labels.device)
        if loss.weight is None
        else loss.weight.to(device=labels.device, dtype=dtype)
    )
    return torch.where(valid, w[labels.clamp(0, k - 1)], torch.zeros((), dtype=dtype, device=labels.device))


@fuses(nn.CrossEntropyLoss)  # and NLLLoss after a LogSoftmax (fastdnc.curvature.fused)
class SoftmaxCrossEntropy(OutputLoss):
    @classmethod
    def why_not(cls, loss, targets, sizes, k):
        if getattr(loss, "label_smoothing", 0.0) and loss.weight is not None:
            return "CrossEntropyLoss with both class weights and label smoothing"
        if any(t.ndim != 1 or t.dtype.is_floating_point for t in targets):
            return "the targets are not class indices (class probabilities take the generic path)"
        if any(bool((((t < 0) | (t >= k)) & (t != loss.ignore_index)).any()) for t in targets):
            return "some labels are outside 0..K-1"
        if any(float(class_weights(loss, t, k, torch.float64).sum()) == 0 for t in targets):
            return "a batch has no sample left to average over (all ignored)"
        return None

    @classmethod
    def from_torch(cls, loss, targets, sizes, k, num_data, mean, dtype):
        ws = [class_weights(loss, t, k, dtype) for t in targets]
        weights = torch.cat([w * (n / num_data) / w.sum() if mean else w for w, n in zip(ws, sizes, strict=True)])
        labels = torch.cat(list(targets))
        eps = getattr(loss, "label_smoothing", 0.0)
        soft = nn.functional.one_hot(labels.clamp(0, k - 1), k).T.to(dtype) * (1 - eps) + eps / k
        return lambda z: cls(z, soft, weights)

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


@fuses(nn.BCEWithLogitsLoss)
class SigmoidBinaryCrossEntropy(OutputLoss):
    @classmethod
    def why_not(cls, loss, targets, sizes, k):
        if loss.weight is not None or loss.pos_weight is not None:
            return "BCEWithLogitsLoss with weight or pos_weight"
        return super().why_not(loss, targets, sizes, k)

    @classmethod
    def from_torch(cls, loss, targets, sizes, k, num_data, mean, dtype):
        target, per = elementwise(targets, num_data, k, mean, dtype)
        return lambda z: cls(z, target, per)

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


@fuses(nn.HuberLoss)
class Huber(OutputLoss):
    """torch's ``HuberLoss(delta=δ)`` (see the module docstring)."""

    @classmethod
    def from_torch(cls, loss, targets, sizes, k, num_data, mean, dtype):
        target, per = elementwise(targets, num_data, k, mean, dtype)
        return lambda z: cls(z, target, per, float(loss.delta))

    def __init__(self, output: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, delta: float) -> None:
        super().__init__(output, weights)
        self.targets, self.delta = targets, delta
        self.inside = ((output - targets).abs() <= delta).to(output.dtype)  # where h'' = 1 (else 0)

    def gradient(self) -> torch.Tensor:
        return self.weights * (self.output - self.targets).clamp(-self.delta, self.delta)

    def hessian_product(self, zdot: torch.Tensor) -> torch.Tensor:
        return self.weights * self.inside * zdot

    def hessian_root(self) -> torch.Tensor:
        return identity_root(self.output) * (self.weights * self.inside).sqrt()
