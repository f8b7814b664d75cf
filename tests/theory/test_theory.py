"""Closed forms of theory.md §3.0 against brute-force minimisation and each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

import fastdnc as fd


def brute_force_loss(k, n, depth, lams, lam_h):
    """min over γ of (1-γ)²/2 + (L+1)/2 (c γ²)^{1/(L+1)}, numerically (the AM-GM reduction)."""
    c = k**depth * k * n * lam_h * math.prod(lams)

    def f(g):
        return 0.5 * (1 - g) ** 2 + 0.5 * (depth + 1) * (c * g * g) ** (1 / (depth + 1))

    res = minimize_scalar(f, bounds=(0, 1), method="bounded", options={"xatol": 1e-14})
    return min(res.fun, 0.5), res.x


@pytest.mark.parametrize(
    "k, n, depth, lams, lam_h",
    [
        (4, 5, 4, [5e-3] * 4, 5e-3),
        (3, 40, 5, [1e-2] * 5, 1e-2),
        (4, 5, 1, [1e-2], 1e-2),
        (5, 3, 3, [1e-3, 4e-3, 2e-3], 7e-3),
        (2, 10, 2, [0.05, 0.05], 0.05),
    ],
)
def test_optimal_loss_matches_brute_force(k, n, depth, lams, lam_h):
    opt = fd.theory.optimum(k, n, depth, lams, lam_h)
    loss, gamma = brute_force_loss(k, n, depth, lams, lam_h)
    assert opt.optimal_loss == pytest.approx(loss, abs=1e-10)
    if opt.exists:
        assert opt.gamma == pytest.approx(gamma, abs=1e-6)
        # the γ equation, AM-GM balance and the chain of norms
        c = k**depth * k * n * lam_h * math.prod(lams)
        g = opt.gamma
        assert g ** (depth - 1) * (1 - g) ** (depth + 1) == pytest.approx(c, rel=1e-10)
        assert opt.class_mean_norms[-1] == pytest.approx(g, rel=1e-12)
        for lam, s in zip(lams, opt.singular_values):
            assert lam * k * s**2 == pytest.approx(g * (1 - g), rel=1e-12)


def test_threshold_lambda_star():
    k, n, depth = 4, 5, 4
    ls = fd.theory.optimum(k, n, depth, 1e-3).lambda_star
    assert ls == pytest.approx(((depth - 1) ** (depth - 1) / (depth ** (2 * depth) * k ** (depth + 1) * n)) ** 0.2)
    below, above = fd.theory.optimum(k, n, depth, ls * 0.999), fd.theory.optimum(k, n, depth, ls * 1.001)
    assert below.exists and not above.exists
    assert below.threshold_scale > 1 > above.threshold_scale
    assert below.gamma > (depth - 1) / depth and above.gamma == 0 and above.optimal_loss == 0.5
    assert not math.isnan(above.critical_gamma)  # a non-optimal critical point still exists


def test_depth_one_closed_form():
    opt = fd.theory.optimum(3, 4, 1, 0.01)
    assert opt.gamma == pytest.approx(1 - math.sqrt(3 * 12 * 0.01 * 0.01))


def test_theory_input_errors():
    with pytest.raises(ValueError, match="feature_decay=None is ambiguous"):
        fd.theory.optimum(3, 2, 2, [1e-2, 2e-2])
    with pytest.raises(ValueError, match="> 0"):
        fd.theory.optimum(3, 2, 2, 0.0)
    with pytest.raises(ValueError, match="num_classes"):
        fd.theory.optimum(1, 2, 2, 1e-2)
    assert np.isfinite(fd.theory.optimum(3, 2, 2, 1e-12).gamma)


# --------------------------------------------------------------------------- constructed optima
# every prediction of §3.0–3.7 against the operators, at points placed exactly by the constructors

LINEAR_POINTS = {
    "K3-L3": (3, 2, 5, 3, 1e-2, None),
    "K2-L3": (2, 2, 4, 3, 2e-2, None),
    "K4-L2": (4, 3, 6, 2, 5e-3, None),
    "K3-L1": (3, 3, 4, 1, 1e-2, None),
    "K3-per-block": (3, 2, 5, 3, [1e-2, 4e-3, 2e-2], 8e-3),
}


@pytest.fixture(params=list(LINEAR_POINTS), ids=list(LINEAR_POINTS))
def linear_point(request):
    k, n, d, depth, lam, lam_h = LINEAR_POINTS[request.param]
    m = fd.theory.optimum_model(k, n, d, depth, lam, lam_h)
    return m, fd.theory.optimum(k, n, depth, m.weight_decay, m.feature_decay)


def _rel(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _amax(t):
    return float(t.abs().max()) if t.numel() else 0.0


def _levels(levels):
    vals = [lv.value for lv in levels for _ in range(lv.multiplicity)]
    return torch.sort(torch.tensor(vals, dtype=torch.float64), descending=True).values


def test_linear_optimum_is_critical_with_the_closed_form_loss(linear_point):
    m, opt = linear_point
    res = m.loss_and_gradients(decay=True)
    assert max(float(g.abs().max()) for g in res.gradients) < 1e-12
    assert float(res.loss) == pytest.approx(opt.optimal_loss, rel=1e-12)
    norms = [float(torch.linalg.vector_norm(m.class_means(l).detach(), dim=0).max()) for l in range(1, m.depth + 2)]
    assert _rel(norms, opt.class_mean_norms) < 1e-12


def test_linear_layer_hessians_fidelity_gradients_and_weights(linear_point):
    m, opt = linear_point
    k = m.num_classes
    for l in range(1, m.depth + 1):
        H = fd.layer_hessian(m, l)
        ev = torch.sort(H.eigvalsh(), descending=True).values
        assert _rel(ev[: k * k], torch.full((k * k,), opt.layer_outliers[l - 1])) < 1e-10
        assert _amax(ev[k * k :]) < 1e-10 * float(ev[0])
        f = fd.alignment.eigenvector_fidelity(m, l, H)
        assert _rel(f, torch.ones(k, k)) < 1e-10
        kappa = fd.alignment.gradient_coefficients(m, l)
        assert _rel(kappa, torch.eye(k) / k) < 1e-10
        # the fit gradient lies entirely in the K²-dimensional outlier space (Gur-Ari overlap 1)
        vals, vecs = torch.linalg.eigh(H.to_dense())
        g = fd.curvature.oracles.layer_fit_gradient(m, l)
        assert fd.gradient_overlap(g, vecs[:, -k * k :]) == pytest.approx(1.0, abs=1e-10)
        # weight spectra: W_lᵀW_l has K eigenvalues s_l², the rest 0
        wev = torch.sort(
            torch.linalg.eigvalsh(m.weights[l - 1].detach().T @ m.weights[l - 1].detach()), descending=True
        ).values
        assert _rel(wev[:k], torch.full((k,), opt.singular_values[l - 1] ** 2)) < 1e-10
        assert _amax(wev[k:]) < 1e-10 * float(wev[0])
    assert max(fd.alignment.balancedness(m)) < 1e-10


def test_papyan_split_at_the_optimum(linear_point):
    m, opt = linear_point
    k = m.num_classes
    for l in range(1, m.depth + 1):
        split = fd.curvature.papyan_split(m, l)
        assert split.ranks() == {"class": k, "cross": k * (k - 1), "within": 0, "total": k * k}
        for part, count in ((split.class_, k), (split.cross, k * (k - 1))):
            vals = part.nonzero_eigh()[0].flip(0)[:count]
            assert _rel(vals, torch.full((count,), opt.layer_outliers[l - 1])) < 1e-10


@pytest.mark.parametrize("include_features", [False, True])
def test_full_hessian_spectrum_table(include_features):
    for k, n, d, depth, lam in [(3, 2, 5, 3, 1e-2), (2, 3, 4, 2, 2e-2), (4, 2, 6, 3, 5e-3), (3, 2, 3, 1, 1e-2)]:
        m = fd.theory.optimum_model(k, n, d, depth, lam)
        opt = fd.theory.optimum(k, n, depth, lam)
        H = fd.hessian(m, include_features=include_features)
        ev = torch.sort(torch.linalg.eigvalsh(H.to_dense()), descending=True).values
        pred = _levels(fd.theory.full_hessian_spectrum(opt, d, include_features))
        assert pred.numel() == H.size
        assert _rel(ev, pred) < 1e-10
        # the fit gradient lies in the top-K² eigenspace of the full Hessian
        vecs = torch.linalg.eigh(H.to_dense())[1]
        g = fd.curvature.oracles.fit_gradient(m, include_features)
        assert fd.gradient_overlap(g, vecs[:, -k * k :]) == pytest.approx(1.0, abs=1e-10)
    with pytest.raises(ValueError, match="one common λ"):
        fd.theory.full_hessian_spectrum(fd.theory.optimum(3, 2, 2, [1e-2, 2e-2], 1e-2), 5)


@pytest.mark.parametrize(
    "k, n, d, depth, lam", [(3, 2, 5, 3, 1e-2), (4, 2, 6, 2, 5e-3), (2, 3, 4, 3, 2e-2), (5, 1, 6, 2, [1e-3, 3e-3])]
)
def test_ce_critical_point(k, n, d, depth, lam):
    m = fd.theory.ce_critical_model(k, n, d, depth, lam, 2e-3 if isinstance(lam, list) else None)
    pt = fd.theory.ce_critical_point(k, n, depth, m.weight_decay, m.feature_decay)
    res = m.loss_and_gradients(decay=True)
    assert max(float(g.abs().max()) for g in res.gradients) < 1e-12
    assert pt.p == pytest.approx(1 / (1 + (k - 1) * math.exp(-pt.alpha)), rel=1e-14)
    assert float(res.loss) == pytest.approx(pt.loss, rel=1e-12)
    for l in range(1, depth + 1):
        H = fd.layer_hessian(m, l)
        vals, vecs = torch.linalg.eigh(H.to_dense())
        vals, vecs = vals.flip(0), vecs.flip(1)
        pred = _levels(pt.layer_spectrum(l))
        r = pred.numel()
        assert r == (k - 1) ** 2 or k == 2
        assert _rel(vals[:r], pred) < 1e-10
        assert _amax(vals[r:]) < 1e-10 * float(vals[0])
        # the top eigenvector is ∝ vec W_l and ∝ the fit gradient
        w = m.weights[l - 1].detach().reshape(-1)
        assert float((vecs[:, 0] @ w) ** 2 / (w @ w)) == pytest.approx(1.0, abs=1e-10)
        g = fd.curvature.oracles.layer_fit_gradient(m, l)
        assert float((vecs[:, 0] @ g) ** 2 / (g @ g)) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0])
def test_relu_disjoint_support_point(delta):
    k, n, d, depth, lam = 3, 2, 5, 3, 1e-2
    m = fd.theory.optimum_model(k, n, d, depth, lam, activation="relu")
    opt = fd.theory.optimum(k, n, depth, lam)
    assert float((torch.stack([p.detach().min() for p in m.preactivations()[1:]])).min()) >= 0
    assert max(float(g.abs().max()) for g in m.loss_and_gradients().gradients) < 1e-12
    for l in range(1, depth + 1):
        H = fd.layer_hessian(m, l, relu_prime_at_zero=delta)
        ev = torch.sort(torch.linalg.eigvalsh(H.to_dense()), descending=True).values
        pred = _levels(fd.theory.relu_layer_outliers(opt, l, delta))
        r = pred.numel()
        assert _rel(ev[:r], pred) < 1e-10
        assert _amax(ev[r:]) < 1e-10 * float(ev[0])
        # same-class pairs are eigenvectors with eigenvalue ℓ_l; cross pairs with ℓ_l δ^{2(L−l)}
        v = fd.alignment.class_mean_pairs(m, l)
        hv = H @ v
        ray = (v * hv).sum(0) / v.square().sum(0)
        cross = opt.layer_outliers[l - 1] * delta ** (2 * (depth - l))
        expect = torch.where(torch.eye(k, dtype=torch.bool).reshape(-1), opt.layer_outliers[l - 1], cross)
        assert _rel(ray, expect) < 1e-10
        assert float((hv - v * ray).abs().max()) < 1e-10 * float(hv.abs().max())


def test_constructor_errors():
    with pytest.raises(ValueError, match="frames='coordinate'"):
        fd.theory.optimum_model(3, 2, 5, 3, 1e-2, activation="relu", frames="random")
    with pytest.raises(ValueError, match="above the threshold"):
        fd.theory.optimum_model(3, 2, 5, 3, 0.5)
    with pytest.raises(ValueError, match="too large"):
        fd.theory.ce_critical_point(3, 2, 3, 5.0)
    with pytest.raises(ValueError, match="delta"):
        fd.theory.relu_layer_outliers(fd.theory.optimum(3, 2, 3, 1e-2), 1, 2.0)
