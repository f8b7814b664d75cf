r"""Closed forms of the deep linear UFM (theory.md §3.0).

Global optimum of the deep linear UFM with MSE loss. At every critical point consecutive factors
align and share singular values; at the global minimiser the output is :math:`Z^* = \gamma Y`
where :math:`\gamma` is the **largest** root in :math:`((L-1)/L, 1)` of

.. math::

    \gamma^{L-1}(1-\gamma)^{L+1} = c, \qquad c = K^L N \lambda_H \prod_{l=1}^L \lambda_l
    \quad (= K^{L+1} n \lambda^{L+1} \text{ for one } \lambda).

Derivation (all blocks, per-block λ): with K equal singular values :math:`s_l` of :math:`W_l` and
class means of norm :math:`m_1` in :math:`H_1`, the fit is :math:`(1-\gamma)^2/2` with
:math:`\gamma = m_1\prod_l s_l`; by AM–GM the regulariser is minimised when all
:math:`\lambda_l K s_l^2 = \lambda_H N m_1^2 = t`, giving :math:`t = \gamma(1-\gamma)` at the
stationary point. Hence

* :math:`s_l^2 = \gamma(1-\gamma)/(K\lambda_l)`, :math:`\|\mu^{(1)}\|^2 = \gamma(1-\gamma)/(N\lambda_H)`,
  :math:`\|\mu^{(l+1)}\| = s_l\|\mu^{(l)}\|` (and :math:`\|\mu^{(L+1)}\| = \gamma`);
* optimal loss :math:`(1-\gamma)^2/2 + (L+1)\gamma(1-\gamma)/2`; the zero solution has loss 1/2;
* the non-zero optimum beats zero iff :math:`\gamma > (L-1)/L`, i.e. iff
  :math:`\lambda < \lambda^* = \big((L-1)^{L-1}/(L^{2L}K^{L+1}n)\big)^{1/(L+1)}` for one λ.
  With per-block λ the same holds for :math:`c < c^* = (L-1)^{L-1}/L^{2L}`;
  ``threshold_scale = (c^*/c)^{1/(L+1)}`` is the factor by which all decays can grow before
  the optimum collapses to zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from scipy.optimize import brentq

from ._checks import check_decay, check_positive_int, per_layer


@dataclass(frozen=True)
class Optimum:
    r"""The global optimum of a deep linear MSE UFM (see the module docstring).

    Attributes:
        gamma: γ with :math:`Z^* = \gamma Y` (0 when the optimum is the zero solution).
        exists: whether a non-zero global optimum exists (γ > (L−1)/L).
        critical_gamma: the largest root of the γ equation, or NaN if there is none (it can exist
            without being the global optimum).
        optimal_loss: loss at the global optimum (1/2 when it is zero).
        lambda_star: the common-λ threshold :math:`\lambda^*`.
        threshold_scale: :math:`(c^*/c)^{1/(L+1)}`; > 1 iff the non-zero optimum exists.
        singular_values: :math:`s_1..s_L` (K equal non-zero singular values per layer).
        class_mean_norms: :math:`\|\mu^{(1)}\|, \dots, \|\mu^{(L+1)}\|` (input of each layer, then Z).
        weight_decay: λ_1..λ_L; feature_decay: λ_H.
    """

    num_classes: int
    n_per_class: int
    depth: int
    weight_decay: tuple[float, ...]
    feature_decay: float
    gamma: float
    exists: bool
    critical_gamma: float
    optimal_loss: float
    lambda_star: float
    threshold_scale: float
    singular_values: tuple[float, ...]
    class_mean_norms: tuple[float, ...]

    @property
    def layer_outliers(self) -> tuple[float, ...]:
        """ℓ_l = λ_l γ/(1−γ) = ‖μ^(l)‖²γ²/(K‖μ^(l+1)‖²): the K² equal non-zero eigenvalues of the fit
        Hessian of W_l (§3.1)."""
        return tuple(lam * self.gamma / (1 - self.gamma) for lam in self.weight_decay)

    @property
    def feature_outlier(self) -> float:
        """λ_H γ/(1−γ): the non-zero eigenvalue (multiplicity K·N) of the fit Hessian of H_1."""
        return self.feature_decay * self.gamma / (1 - self.gamma)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["layer_outliers"] = list(self.layer_outliers)
        out["feature_outlier"] = self.feature_outlier
        return out


def _largest_root(depth: int, c: float) -> float:
    """Largest root of γ^{L-1}(1-γ)^{L+1} = c in (γ_peak, 1), or NaN if none exists."""
    lo = (depth - 1) / (2 * depth)  # maximiser of the left-hand side on (0, 1)

    def g(x: float) -> float:
        return (depth - 1) * math.log(x) + (depth + 1) * math.log1p(-x) - math.log(c)

    if depth == 1:
        return 1.0 - math.sqrt(c) if c < 1 else math.nan
    if g(lo) < 0:
        return math.nan
    hi = 1.0 - 1e-300 ** (1.0 / (depth + 1))
    hi = min(hi, math.nextafter(1.0, 0.0))
    if g(hi) > 0:  # c is astronomically small: γ is 1 to double precision
        return hi
    return brentq(g, lo, hi, xtol=1e-300, rtol=4 * 2.0**-52, maxiter=500)


def _sizes_and_decays(num_classes, n_per_class, depth, weight_decay, feature_decay):
    """Checked (K, n, L, [λ_1..λ_L], λ_H); every decay must be > 0 (without decay the optimum is
    not unique), and feature_decay=None needs one common weight decay."""
    k = check_positive_int(num_classes, "num_classes", 2)
    n = check_positive_int(n_per_class, "n_per_class")
    depth = check_positive_int(depth, "depth")
    lams = per_layer(weight_decay, depth, "weight_decay")
    if feature_decay is None:
        if len(set(lams)) > 1:
            raise ValueError("feature_decay=None is ambiguous with per-layer weight decays: pass it explicitly")
        feature_decay = lams[0]
    lam_h = check_decay(feature_decay, "feature_decay")
    if min(lams) <= 0 or lam_h <= 0:
        raise ValueError("the closed form needs every weight and feature decay > 0 (without decay the "
                         "optimum is not unique)")
    return k, n, depth, lams, lam_h


def optimum(
    num_classes: int,
    n_per_class: int,
    depth: int,
    weight_decay: float | Sequence[float],
    feature_decay: float | None = None,
) -> Optimum:
    """Global optimum of the deep linear MSE UFM with per-block weight decay.

    Args:
        num_classes: K ≥ 2. n_per_class: n ≥ 1. depth: L ≥ 1.
        weight_decay: λ or [λ_1..λ_L]. feature_decay: λ_H (None: the single weight decay).

    >>> opt = optimum(4, 5, 4, 5e-3)
    >>> opt.exists, round(opt.gamma, 6), round(opt.optimal_loss, 6)
    (True, 0.97193, 0.068599)
    """
    k, n, depth, lams, lam_h = _sizes_and_decays(num_classes, n_per_class, depth, weight_decay, feature_decay)
    big_n = k * n
    c = k**depth * big_n * lam_h * math.prod(lams)
    c_star = (depth - 1) ** (depth - 1) / depth ** (2 * depth)
    lambda_star = ((depth - 1) ** (depth - 1) / (depth ** (2 * depth) * k ** (depth + 1) * n)) ** (1 / (depth + 1))
    root = _largest_root(depth, c)
    exists = bool(root == root and root > (depth - 1) / depth)
    gamma = root if exists else 0.0
    t = gamma * (1 - gamma)
    s = tuple(math.sqrt(t / (k * lam)) for lam in lams)
    norms = [math.sqrt(t / (big_n * lam_h))]
    for sl in s:
        norms.append(norms[-1] * sl)
    loss = 0.5 * (1 - gamma) ** 2 + 0.5 * (depth + 1) * t
    return Optimum(
        num_classes=k, n_per_class=n, depth=depth, weight_decay=tuple(lams), feature_decay=lam_h,
        gamma=gamma, exists=exists, critical_gamma=root, optimal_loss=loss if exists else 0.5,
        lambda_star=lambda_star, threshold_scale=(c_star / c) ** (1 / (depth + 1)),
        singular_values=s, class_mean_norms=tuple(norms),
    )


def _frame(dim: int, k: int, gen: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    """An orthonormal K-frame (dim × K): the first K coordinate vectors, or random when ``gen`` is given."""
    if gen is None:
        return torch.eye(dim, k, dtype=dtype)
    q, r = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def _place(model, features: torch.Tensor, weights: list[torch.Tensor]):
    with torch.no_grad():
        model._features.copy_(features)
        for w, new in zip(model.weights, weights):
            w.copy_(new)
    return model


def optimum_model(
    num_classes: int,
    n_per_class: int,
    width: int,
    depth: int,
    weight_decay: float | Sequence[float] = 5e-3,
    feature_decay: float | None = None,
    *,
    activation: str = "linear",
    frames: str | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
):
    r"""A :class:`~fastdnc.models.DeepUFM` (MSE) placed exactly at the closed-form global optimum.

    Each layer gets an orthonormal K-frame :math:`F_l` (d × K; :math:`F_{L+1} = I_K`), and

    .. math::  H_1 = \|\mu^{(1)}\| F_1 Y,\qquad W_l = s_l F_{l+1}F_l^\top,

    so the class means of every layer are an orthogonal frame with the norms of :func:`optimum`
    and :math:`Z = \gamma Y`. ``frames="random"`` (the linear default) draws the frames from
    ``seed``; ``"coordinate"`` uses the first K coordinates. ReLU needs ``"coordinate"`` (its
    default): then every pre-activation is ≥ 0 with disjoint class supports (theory.md §3.7), the
    ReLU model computes exactly the linear one, and it is a critical point for every σ′(0).
    """
    from .models import DeepUFM

    frames = frames or ("coordinate" if activation == "relu" else "random")
    if frames not in ("random", "coordinate"):
        raise ValueError(f"frames must be 'random' or 'coordinate', got {frames!r}")
    if activation == "relu" and frames != "coordinate":
        raise ValueError("a ReLU UFM is at a critical point only with non-negative, disjoint-support class means: "
                         "use frames='coordinate'")
    model = DeepUFM(num_classes, n_per_class, width, depth, activation=activation, loss="mse",
                    weight_decay=weight_decay, feature_decay=feature_decay, seed=seed, dtype=dtype)
    opt = optimum(num_classes, n_per_class, depth, model.weight_decay, model.feature_decay)
    if not opt.exists:
        raise ValueError(f"no non-zero optimum: the decays are above the threshold (threshold_scale "
                         f"{opt.threshold_scale:.3g} < 1), so the global minimiser is 0")
    gen = torch.Generator().manual_seed(seed) if frames == "random" else None
    k = num_classes
    fr = [_frame(width, k, gen, dtype) for _ in range(depth)] + [torch.eye(k, dtype=dtype)]
    weights = [s * fr[l + 1] @ fr[l].T for l, s in enumerate(opt.singular_values)]
    return _place(model, opt.class_mean_norms[0] * fr[0] @ model.targets, weights)


@dataclass(frozen=True)
class SpectrumLevel:
    """One eigenvalue of a predicted spectrum with its multiplicity and where it comes from."""

    value: float
    multiplicity: int
    origin: str


def full_hessian_spectrum(opt: Optimum, width: int, include_features: bool = False) -> list[SpectrumLevel]:
    """Every eigenvalue, with multiplicity, of the full (fit + decay) Hessian at the optimum (§3.5).

    Needs one common λ (all λ_l = λ_H) and hidden width d. With M blocks (L, or L + 1 with H_1)
    and ℓ = λγ/(1−γ), split every perturbation of W_l into its parts on the class-mean frames
    :math:`U_{l+1}` (output side) and :math:`U_l` (input side) and their complements ⊥:

    * U×U parts carry the Gauss–Newton outliers: stacked layer eigenvectors give M(ℓ+λ) on the
      K(K−1)/2 antisymmetric pairs and M(ℓ−λ)+2λ on the K(K+1)/2 symmetric ones; each of the
      M − 1 interfaces between consecutive blocks adds the symmetries of the factorisation:
      K(K+1)/2 rescalings at 2λ and K(K−1)/2 rotations at 0;
    * the output-side ⊥ part of block m − 1 and the input-side ⊥ part of block m (K(d−K) each) see
      no Gauss–Newton term and are coupled only by the residual, with singular values λ: K(d−K)
      eigenvalues 2λ and K(d−K) eigenvalues 0 per interface (M − 1 of them);
    * ⊥×⊥ parts of the hidden W_l ((L−1)(d−K)²), the input-side ⊥ part of W_1 without H_1
      (K(d−K)), and the rows of H_1 outside the frame on within-class columns ((d−K)(N−K)) are
      flat: λ;
    * with H_1, the within-class columns on the frame, K(N−K) = K²(n−1), are ℓ+λ.

    The multiplicities add up to the number of parameters; the tests check every level at
    constructed optima against the dense Hessian to 1e-10.
    """
    lams = set(opt.weight_decay) | ({opt.feature_decay} if include_features else set())
    if len(lams) != 1 or opt.feature_decay != opt.weight_decay[0]:
        raise ValueError("the full-Hessian spectrum is derived for one common λ (all λ_l = λ_H)")
    if not opt.exists:
        raise ValueError("no non-zero optimum: the decays are above the threshold")
    k, depth, d = opt.num_classes, opt.depth, width
    if d < k:
        raise ValueError(f"width d={d} must be >= K={k}")
    lam = opt.weight_decay[0]
    ell = opt.layer_outliers[0]
    big_n = k * opt.n_per_class
    m = depth + include_features
    interfaces = m - 1
    flat = (depth - 1) * (d - k) ** 2 + ((d - k) * (big_n - k) if include_features else k * (d - k))
    levels = [
        SpectrumLevel(m * (ell + lam), k * (k - 1) // 2, "Gauss–Newton outliers, antisymmetric stacks: M(ℓ+λ)"),
        SpectrumLevel(m * (ell - lam) + 2 * lam, k * (k + 1) // 2,
                      "Gauss–Newton outliers, symmetric stacks: M(ℓ−λ)+2λ"),
    ]
    if include_features:
        levels.append(SpectrumLevel(ell + lam, k * (big_n - k), "within-class columns of H_1: ℓ+λ"))
    levels += [
        SpectrumLevel(2 * lam, interfaces * (k * (k + 1) // 2 + k * (d - k)), "rescalings and coupled ⊥ parts: 2λ"),
        SpectrumLevel(lam, flat, "flat directions (decay only): λ"),
        SpectrumLevel(0.0, interfaces * (k * (k - 1) // 2 + k * (d - k)), "rotations and coupled ⊥ parts: 0"),
    ]
    return [lv for lv in levels if lv.multiplicity > 0]


def relu_layer_outliers(opt: Optimum, layer: int, delta: float = 0.0) -> list[SpectrumLevel]:
    r"""Non-zero eigenvalues of the fit Hessian of W_layer at the ReLU disjoint-support point (§3.7).

    With D = diag(σ′) equal to 1 on a sample's own class coordinate and δ = σ′(0) on the others,
    :math:`A_{l+1,i}^\top A_{l+1,i}` is diagonal, so the block is diagonal in
    :math:`\hat\mu_{c'}^{(l+1)} \otimes \hat\mu_c^{(l)}`: ℓ_l on the K pairs c = c′ and
    :math:`\ell_l\delta^{2(L-l)}` on the K(K−1) pairs c ≠ c′ (those vanish for δ = 0, PyTorch's
    convention, unless l = L).
    """
    if not 1 <= layer <= opt.depth:
        raise ValueError(f"layer must be in 1..{opt.depth}, got {layer}")
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta = σ′(0) must be in [0, 1], got {delta}")
    k, ell = opt.num_classes, opt.layer_outliers[layer - 1]
    cross = ell * delta ** (2 * (opt.depth - layer))
    if cross == ell:
        return [SpectrumLevel(ell, k * k, "all class pairs: ℓ_l")]
    out = [SpectrumLevel(ell, k, "same-class pairs c = c′: ℓ_l")]
    if cross > 0:
        out.append(SpectrumLevel(cross, k * (k - 1), "cross-class pairs: ℓ_l δ^{2(L−l)}"))
    return out


@dataclass(frozen=True)
class CECriticalPoint:
    r"""The cross-entropy DNC critical point of a deep linear UFM (theory.md §3.6).

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
        levels = [SpectrumLevel(scale * (1 + (k - 1) * gap), 1, "top: ∝ vec W_l (the fit gradient)"),
                  SpectrumLevel(scale * (1 + (k - 2) * gap), k - 1, "second level"),
                  SpectrumLevel(scale, (k - 1) ** 2 - k, "third level")]
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
    k, n, depth, lams, lam_h = _sizes_and_decays(num_classes, n_per_class, depth, weight_decay, feature_decay)
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
    return CECriticalPoint(num_classes=k, n_per_class=n, depth=depth, weight_decay=tuple(lams), feature_decay=lam_h,
                           alpha=alpha, p=p, q=q, t=t, singular_values=tuple(math.sqrt(t / lam) for lam in lams),
                           feature_singular_value=math.sqrt(t / lam_h))


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
    from .models import DeepUFM

    point = ce_critical_point(num_classes, n_per_class, depth, weight_decay, feature_decay)
    model = DeepUFM(num_classes, n_per_class, width, depth, activation="linear", loss="ce",
                    weight_decay=weight_decay, feature_decay=point.feature_decay, seed=seed, dtype=dtype)
    k = num_classes
    gen = torch.Generator().manual_seed(seed)
    # P: orthonormal basis of 1^⊥ as rows
    basis = torch.linalg.qr(torch.eye(k, dtype=torch.float64) - 1.0 / k)[0][:, : k - 1]
    pmat = basis.T.to(dtype)
    fr = [_frame(width, k - 1, gen, dtype) for _ in range(depth)] + [pmat.T]
    weights = [s * fr[l + 1] @ fr[l].T for l, s in enumerate(point.singular_values)]
    means = point.feature_singular_value / math.sqrt(n_per_class) * fr[0] @ pmat
    return _place(model, means @ model.targets, weights)
