r"""The DNC critical point of the deep linear UFM with cross-entropy loss (docs/theory.md §3.6): its logit
scale, loss, layer spectra and a model placed at it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from scipy.optimize import brentq

from ..models import DeepUFM
from .optimum import orthonormal_frame, place_parameters, sizes_and_decays
from .spectra import SpectrumLevel


@dataclass(frozen=True)
class CECriticalPoint:
    r"""The cross-entropy DNC critical point of a deep linear UFM (docs/theory.md §3.6).

    Class means form a simplex ETF at every layer and the logits are :math:`Z = \alpha S\otimes
    1_n^\top` (S = I − 11ᵀ/K). Every block has K − 1 equal singular values :math:`s_b` with
    :math:`\lambda_b s_b^2 = t` for all blocks (H_1 included), and stationarity in α reads

    .. math:: q(\alpha)\,\alpha^{(L-1)/(L+1)} = (n\lambda_H\textstyle\prod_l\lambda_l)^{1/(L+1)},
        \qquad t = q\alpha,

    with p = 1/(1 + (K−1)e^{−α}) and q = (1 − p)/(K − 1) the softmax probabilities of the true and
    of each wrong class. For small λ it has two roots; ``alpha`` is the larger (the minimiser).
    """

    num_classes: int
    n_per_class: int
    depth: int
    weight_decay: tuple[float, ...]
    feature_decay: float
    alpha: float
    p: float
    q: float
    t: float
    singular_values: tuple[float, ...]  # W_1..W_L
    feature_singular_value: float  # of H_1

    @property
    def loss(self) -> float:
        """−log p + (L+1)(K−1)t/2: every block contributes (K−1)t/2 to the decay term."""
        return -math.log(self.p) + (self.depth + 1) * (self.num_classes - 1) * self.t / 2

    def layer_spectrum(self, layer: int) -> list[SpectrumLevel]:
        r"""Non-zero eigenvalues of the fit Hessian of W_layer: rank (K−1)², three levels
        :math:`(\lambda_l\alpha/K)\{1+(K-1)(p-q),\ 1+(K-2)(p-q),\ 1\}` with multiplicities
        {1, K−1, (K−1)²−K}; the top eigenvector is ∝ vec W_l ∝ the fit gradient. For K = 2 only the top
        level exists."""
        k = self.num_classes
        if not 1 <= layer <= self.depth:
            raise ValueError(f"layer must be in 1..{self.depth}, got {layer}")
        scale = self.weight_decay[layer - 1] * self.alpha / k
        gap = self.p - self.q
        levels = [
            SpectrumLevel(scale * (1 + (k - 1) * gap), 1, "top: ∝ vec W_l (the fit gradient)"),
            SpectrumLevel(scale * (1 + (k - 2) * gap), k - 1, "second level"),
            SpectrumLevel(scale, (k - 1) ** 2 - k, "third level"),
        ]
        if k == 2:
            return levels[:1]
        return [lv for lv in levels if lv.multiplicity > 0]

    def to_dict(self) -> dict:
        return {**asdict(self), "loss": self.loss}


def _ce_q(alpha: float, k: int) -> float:
    return math.exp(-alpha) / (1 + (k - 1) * math.exp(-alpha))


def ce_critical_point(
    num_classes: int,
    n_per_class: int,
    depth: int,
    weight_decay: float | Sequence[float],
    feature_decay: float | None = None,
) -> CECriticalPoint:
    """The CE DNC critical point (see :class:`CECriticalPoint`); raises if λ is too large for one."""
    k, n, depth, lams, lam_h = sizes_and_decays(num_classes, n_per_class, depth, weight_decay, feature_decay)
    c = (n * lam_h * math.prod(lams)) ** (1 / (depth + 1))
    e = (depth - 1) / (depth + 1)

    def f(a: float) -> float:  # log q(α) + e log α − log c, decreasing after its maximum
        return -a - math.log1p((k - 1) * math.exp(-a)) + e * math.log(a) - math.log(c)

    hi = 1.0
    while f(hi) > 0 or hi < 1.0:
        hi *= 2
        if hi > 1e4:
            raise ValueError("no CE critical point found below α = 1e4")
    if e > 0:
        # f′(α) = e/α − p(α): the maximum of f
        def fp(a: float) -> float:
            return e / a - 1 / (1 + (k - 1) * math.exp(-a))

        peak = brentq(fp, 1e-12, max(hi, 2 * e * k + 10), xtol=1e-15)
        if f(peak) <= 0:
            raise ValueError("no CE critical point: the decays are too large (the logits collapse to 0)")
        lo = peak
    else:
        lo = 1e-12
        if f(lo) <= 0:
            raise ValueError("no CE critical point: the decays are too large (the logits collapse to 0)")
    alpha = brentq(f, lo, hi, xtol=1e-300, rtol=4 * 2.0**-52, maxiter=500)
    q = _ce_q(alpha, k)
    p = 1 - (k - 1) * q
    t = q * alpha
    return CECriticalPoint(
        num_classes=k,
        n_per_class=n,
        depth=depth,
        weight_decay=tuple(lams),
        feature_decay=lam_h,
        alpha=alpha,
        p=p,
        q=q,
        t=t,
        singular_values=tuple(math.sqrt(t / lam) for lam in lams),
        feature_singular_value=math.sqrt(t / lam_h),
    )


def ce_critical_model(
    num_classes: int,
    n_per_class: int,
    width: int,
    depth: int,
    weight_decay: float | Sequence[float] = 5e-3,
    feature_decay: float | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
):
    r"""A linear CE :class:`~fastdnc.models.DeepUFM` placed exactly at :func:`ce_critical_point`.

    With orthonormal (K−1)-frames :math:`F_l` (random, from ``seed``) and P ((K−1) × K) with
    orthonormal rows orthogonal to 1 (PᵀP = S): :math:`H_1 = (s_H/\sqrt n) F_1 P\otimes 1_n^\top`,
    :math:`W_l = s_l F_{l+1}F_l^\top` and :math:`W_L = s_L P^\top F_L^\top`.
    """

    point = ce_critical_point(num_classes, n_per_class, depth, weight_decay, feature_decay)
    model = DeepUFM(
        num_classes,
        n_per_class,
        width,
        depth,
        activation="linear",
        loss="ce",
        weight_decay=weight_decay,
        feature_decay=point.feature_decay,
        seed=seed,
        dtype=dtype,
    )
    k = num_classes
    gen = torch.Generator().manual_seed(seed)
    # P: orthonormal basis of 1^⊥ as rows
    basis = torch.linalg.qr(torch.eye(k, dtype=torch.float64) - 1.0 / k)[0][:, : k - 1]
    pmat = basis.T.to(dtype)
    fr = [orthonormal_frame(width, k - 1, gen, dtype) for _ in range(depth)] + [pmat.T]
    weights = [s * fr[l + 1] @ fr[l].T for l, s in enumerate(point.singular_values)]
    means = point.feature_singular_value / math.sqrt(n_per_class) * fr[0] @ pmat
    return place_parameters(model, means @ model.targets, weights)
