"""Stochastic Lanczos quadrature (fastdnc.spectral.density) against the exact eigenvalue distribution."""

from __future__ import annotations

import pytest
import torch
from known_spectra import with_spectrum

import fastdnc as fd


def test_slq_density_integrates_to_one_and_matches_the_histogram():
    ev = torch.cat([torch.linspace(0, 1, 380), torch.full((20,), 4.0)]).double()
    a = with_spectrum(ev.tolist(), seed=1)
    d = fd.spectral_density(a, num_probes=16, steps=60, grid=4000, sigma=0.02)
    assert float(torch.trapezoid(d.density, d.grid)) == pytest.approx(1.0, abs=1e-3)
    torch.testing.assert_close(d.weights.sum(1), torch.ones(16, dtype=torch.float64), rtol=0, atol=1e-12)
    # 1-Wasserstein distance between the SLQ density and the exact eigenvalue distribution
    cdf_slq = torch.cumulative_trapezoid(d.density, d.grid)
    cdf_true = (ev[None, :] <= d.grid[1:, None]).double().mean(1)
    w1 = float(torch.trapezoid((cdf_slq - cdf_true).abs(), d.grid[1:]))
    assert w1 < 0.05
    assert float(d.density[(d.grid - 4.0).abs() < 0.05].max()) > 0.5  # the outlier spike is there
    dl = fd.spectral_density(a, num_probes=4, steps=40, log=True)
    assert dl.log and 0 <= dl.nonpositive_mass < 0.05
