"""Subspace and gradient overlaps, outlier counts (fastdnc.spectral.overlap)."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd


def test_overlaps_and_outliers():
    u = torch.eye(6, dtype=torch.float64)[:, :2]
    assert fd.subspace_overlap(u, u) == pytest.approx(1.0)
    assert fd.subspace_overlap(u, torch.eye(6, dtype=torch.float64)[:, 2:4]) == pytest.approx(0.0)
    g = torch.tensor([1.0, 1.0, 0, 0, 0, 0], dtype=torch.float64)
    assert fd.gradient_overlap(g, u[:, :1]) == pytest.approx(0.5)
    out = fd.outliers(torch.tensor([9.0, 8.0, 0.5, 0.4, 0.3]))
    assert out.count == 2 and out.bulk_edge == 0.5 and out.gap_ratio == pytest.approx(16.0)
