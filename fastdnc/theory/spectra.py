r"""Predicted Hessian spectra at the DNC optimum: the full (weight, optionally feature) Hessian of the
deep linear MSE UFM (docs/theory.md §3.5) and the outliers of the ReLU layer Hessians (§3.7)."""

from __future__ import annotations

from dataclasses import dataclass

from .optimum import Optimum


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
        SpectrumLevel(
            m * (ell - lam) + 2 * lam, k * (k + 1) // 2, "Gauss–Newton outliers, symmetric stacks: M(ℓ−λ)+2λ"
        ),
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
