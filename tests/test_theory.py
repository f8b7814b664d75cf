"""Closed forms of theory.md §3.0 against brute-force minimisation and each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
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
    [(4, 5, 4, [5e-3] * 4, 5e-3), (3, 40, 5, [1e-2] * 5, 1e-2), (4, 5, 1, [1e-2], 1e-2),
     (5, 3, 3, [1e-3, 4e-3, 2e-3], 7e-3), (2, 10, 2, [0.05, 0.05], 0.05)],
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
