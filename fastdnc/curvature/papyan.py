r"""Papyan's split of a layer's Gauss–Newton block into class, cross-class and within-class parts.

With the per-sample output-side roots :math:`u_{ij}` (column j of :math:`B_i = J_i^\top L_i`,
:math:`L_iL_i^\top = \Lambda_i`: the rows of :math:`A_{l+1}` for a linear MSE UFM, masked per
sample for ReLU, weighted by the softmax Hessian for CE) and the layer inputs :math:`x_i`, the fit
Hessian of :math:`W_l` is :math:`\frac1N\sum_{i,j} v_{ij}v_{ij}^\top` with
:math:`v_{ij} = u_{ij}\otimes x_i` (docs/theory.md §3.2). With :math:`v_{cj}` the class-c average and
:math:`v_c = \mathrm{Avg}_j v_{cj}`, and :math:`n_c` samples in class c (K′ = K roots per sample):

.. math::

    G_\text{class} = \sum_c \tfrac{n_cK'}{N} v_cv_c^\top,\quad
    G_\text{cross} = \sum_c \tfrac{n_c}{N}\sum_j (v_{cj}-v_c)(v_{cj}-v_c)^\top,\quad
    G_\text{within} = \tfrac1N\sum_{i,j}(v_{ij}-v_{c_ij})(v_{ij}-v_{c_ij})^\top,

which add up to the block exactly (for balanced classes the weights are 1 and 1/K, Papyan's
form). At DNC: :math:`G_\text{within} = 0`, rank :math:`G_\text{cross}` = K(K−1), rank
:math:`G_\text{class}` = K, all non-zero eigenvalues ℓ_l. ``class_`` and ``cross`` are explicit
low-rank operators (K and K² columns); ``within`` is the block minus both, so it is never formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._threads import dense_threads, intra_op_threads
from ..models import LayeredModel
from .gauss_newton import gn_jacobian_roots, unit_loss, upstream_of
from .gram import GramOperator
from .layer import layer_hessian
from .low_rank import LowRankOperator
from .operator import CurvatureOperator


def _center_by_class(m: torch.Tensor, labels: torch.Tensor, axis: int) -> torch.Tensor:
    """Subtract from ``m`` (…, N, …) the mean over the samples of each class along ``axis``."""
    k = int(labels.max()) + 1
    moved = m.movedim(axis, 0)
    sums = torch.zeros(k, *moved.shape[1:], dtype=m.dtype, device=m.device).index_add_(0, labels, moved)
    counts = torch.bincount(labels, minlength=k).to(m.dtype).clamp_min(1)
    means = sums / counts.view(-1, *([1] * (moved.dim() - 1)))
    return (moved - means[labels]).movedim(0, axis)


@dataclass
class PapyanSplit:
    """``total`` (the fit Hessian of W_l) = ``class_`` + ``cross`` + ``within``; ``labels`` are the
    samples' classes (for the within-class term in sample space)."""

    total: CurvatureOperator
    class_: LowRankOperator
    cross: LowRankOperator
    within: CurvatureOperator
    labels: torch.Tensor | None = None

    def within_eigenvalues(self) -> torch.Tensor:
        r"""The non-trivial eigenvalues of the within-class term. With a sample-space Gram
        :math:`\mathcal K = c\,\Phi^\top\Phi` (a Gauss–Newton block), within :math:`= c\,\Delta\Delta^\top`
        with :math:`\Delta = \Phi(I - A)` (A: the within-class averaging of the samples, per output),
        so its non-zero eigenvalues are those of :math:`(I - A)\mathcal K(I - A)`, an (N·K')² problem
        instead of P²; otherwise the dense fallback of :meth:`~CurvatureOperator.eigvalsh`."""
        total = self.total
        gram = (
            total.sample_gram(group=False)
            if isinstance(total, GramOperator) and total.gram_size() is not None
            else None
        )
        if gram is None or self.labels is None:
            return self.within.eigvalsh()
        n = gram.num_samples
        m = gram.matrix().view(n, gram.dim // n, n, gram.dim // n)
        centered = _center_by_class(_center_by_class(m, self.labels, 0), self.labels, 2)
        with intra_op_threads(dense_threads(gram.dim)):
            return torch.linalg.eigvalsh(centered.reshape(gram.dim, gram.dim))

    def ranks(self, rtol: float = 1e-10) -> dict[str, int]:
        """Numerical ranks (eigenvalues above ``rtol`` × the largest eigenvalue of ``total``); the
        total and the within-class term through the sample-space Gram where the block has one."""
        total = self.total.eigvalsh()
        tol = rtol * max(float(total[-1]), torch.finfo(self.total.dtype).tiny)
        out = {
            name: int((op.nonzero_eigh()[0] > tol).sum())
            for name, op in (("class", self.class_), ("cross", self.cross))
        }
        out["within"] = int((self.within_eigenvalues().abs() > tol).sum())
        out["total"] = int((total.abs() > tol).sum())
        return out


@torch.no_grad()
def papyan_split(model: LayeredModel, layer: int) -> PapyanSplit:
    """The class / cross-class / within-class split of the fit Hessian of ``W_layer``."""
    total = layer_hessian(model, layer)
    st = model.states()
    x = st.inputs[layer - 1].detach()
    p, n = model.weights[layer - 1].shape[0], model.num_samples
    roots = gn_jacobian_roots(
        upstream_of(model, st.preactivations, layer + 1), unit_loss(model, st.output.detach()), p
    )  # (N, K', p)
    k = model.num_classes
    labels = model.labels
    counts = torch.bincount(labels, minlength=k).to(x.dtype)
    # v_cj = Avg_{i in c} u_ij ⊗ x_i as (K, K', p, q)
    onehot = model.targets / counts.clamp_min(1)[:, None]  # (K, N) averaging weights
    vcj = torch.einsum("ci,ijp,qi->cjpq", onehot, roots, x)
    vc = vcj.mean(dim=1)
    kp = roots.shape[1]
    size = p * x.shape[0]
    class_ = LowRankOperator(vc.reshape(k, size).T, counts * kp / n, total.block_shapes)
    cross_cols = (vcj - vc[:, None]).reshape(k * kp, size).T
    cross = LowRankOperator(cross_cols, (counts / n).repeat_interleave(kp), total.block_shapes)
    within = total - class_ - cross
    return PapyanSplit(total, class_, cross, within, model.labels)
