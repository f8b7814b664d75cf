"""Hutchinson and Hutch++ (fastdnc.spectral.trace) against the exact trace."""

from __future__ import annotations

import torch
from known_spectra import with_spectrum

import fastdnc as fd


def test_trace_estimators():
    a = with_spectrum([50.0] * 5 + torch.linspace(0, 1, 295).tolist(), seed=2)
    exact = float(torch.trace(a))
    hutch = fd.hutchinson_trace(a, 300, seed=1)
    assert abs(hutch.value - exact) < 4 * hutch.std_error + 1e-9
    hpp = fd.hutchpp_trace(a, 60, seed=1)
    assert abs(hpp.value - exact) / exact < 0.01  # the outliers are captured exactly by the sketch
    assert hpp.num_matvecs <= 60
