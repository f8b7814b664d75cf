r"""The global optimum of the deep linear MSE UFM and a model placed at it (docs/theory.md §3.0).

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

from .._checks import check_decay, check_positive_int, per_layer
from ..models import DeepUFM


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


def largest_root(depth: int, c: float) -> float:
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


def sizes_and_decays(num_classes, n_per_class, depth, weight_decay, feature_decay):
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
        raise ValueError(
            "the closed form needs every weight and feature decay > 0 (without decay the optimum is not unique)"
        )
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
    k, n, depth, lams, lam_h = sizes_and_decays(num_classes, n_per_class, depth, weight_decay, feature_decay)
    big_n = k * n
    c = k**depth * big_n * lam_h * math.prod(lams)
    c_star = (depth - 1) ** (depth - 1) / depth ** (2 * depth)
    lambda_star = ((depth - 1) ** (depth - 1) / (depth ** (2 * depth) * k ** (depth + 1) * n)) ** (1 / (depth + 1))
    root = largest_root(depth, c)
    exists = bool(root == root and root > (depth - 1) / depth)
    gamma = root if exists else 0.0
    t = gamma * (1 - gamma)
    s = tuple(math.sqrt(t / (k * lam)) for lam in lams)
    norms = [math.sqrt(t / (big_n * lam_h))]
    for sl in s:
        norms.append(norms[-1] * sl)
    loss = 0.5 * (1 - gamma) ** 2 + 0.5 * (depth + 1) * t
    return Optimum(
        num_classes=k,
        n_per_class=n,
        depth=depth,
        weight_decay=tuple(lams),
        feature_decay=lam_h,
        gamma=gamma,
        exists=exists,
        critical_gamma=root,
        optimal_loss=loss if exists else 0.5,
        lambda_star=lambda_star,
        threshold_scale=(c_star / c) ** (1 / (depth + 1)),
        singular_values=s,
        class_mean_norms=tuple(norms),
    )


def orthonormal_frame(dim: int, k: int, gen: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    """An orthonormal K-frame (dim × K): the first K coordinate vectors, or random when ``gen`` is given."""
    if gen is None:
        return torch.eye(dim, k, dtype=dtype)
    q, r = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def place_parameters(model, features: torch.Tensor, weights: list[torch.Tensor]):
    """Copy ``weights`` (W_1..W_L) and ``features`` (H_1) into a :class:`~fastdnc.models.DeepUFM`."""
    with torch.no_grad():
        for (_, block), new in zip(model.parameter_blocks(include_features=True), [*weights, features]):
            block.copy_(new)
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
    default): then every pre-activation is ≥ 0 with disjoint class supports (docs/theory.md §3.7), the
    ReLU model computes exactly the linear one, and it is a critical point for every σ′(0).
    """

    frames = frames or ("coordinate" if activation == "relu" else "random")
    if frames not in ("random", "coordinate"):
        raise ValueError(f"frames must be 'random' or 'coordinate', got {frames!r}")
    if activation == "relu" and frames != "coordinate":
        raise ValueError(
            "a ReLU UFM is at a critical point only with non-negative, disjoint-support class means: "
            "use frames='coordinate'"
        )
    model = DeepUFM(
        num_classes,
        n_per_class,
        width,
        depth,
        activation=activation,
        loss="mse",
        weight_decay=weight_decay,
        feature_decay=feature_decay,
        seed=seed,
        dtype=dtype,
    )
    opt = optimum(num_classes, n_per_class, depth, model.weight_decay, model.feature_decay)
    if not opt.exists:
        raise ValueError(
            f"no non-zero optimum: the decays are above the threshold (threshold_scale "
            f"{opt.threshold_scale:.3g} < 1), so the global minimiser is 0"
        )
    gen = torch.Generator().manual_seed(seed) if frames == "random" else None
    k = num_classes
    fr = [orthonormal_frame(width, k, gen, dtype) for _ in range(depth)] + [torch.eye(k, dtype=dtype)]
    weights = [s * fr[l + 1] @ fr[l].T for l, s in enumerate(opt.singular_values)]
    return place_parameters(model, opt.class_mean_norms[0] * fr[0] @ model.targets, weights)
