"""NC / DNC metrics: pinned conventions, exact zeros at collapse, non-zeros off it."""

from __future__ import annotations

import math

import pytest
import torch

import fastdnc as fd
from fastdnc.collapse import feature_metrics, numerical_rank, weight_metrics


def one_hot(labels, k):
    return torch.nn.functional.one_hot(labels, k).T.double()


def collapsed_frame(k=4, n=3, d=7, scale=2.0, seed=0):
    """Columns equal to their class mean; class means an orthogonal frame of equal norms."""
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed)))
    labels = torch.arange(k).repeat_interleave(n)
    return scale * q[:, labels], one_hot(labels, k)


def test_perfect_orthogonal_frame_gives_zeros():
    h, y = collapsed_frame()
    m = feature_metrics(h, y, predictions=y.argmax(0), preactivation=h)
    for key in (
        "nc1",
        "nc1_trace_ratio",
        "orthogonal_frame_distance",
        "etf_distance",
        "equinorm",
        "equinorm_uncentred",
        "equiangularity",
        "max_angle",
    ):
        assert abs(m[key]) < 1e-12, key
    assert m["ncc_agreement"] == 1.0
    assert m["mean_rank"] == 4
    assert m["mean_singular_values"] == pytest.approx([2.0] * 4)


def test_simplex_etf_is_not_an_orthogonal_frame():
    k = 4
    etf = torch.eye(k) - 1.0 / k  # centred: a simplex ETF in R^k
    labels = torch.arange(k).repeat_interleave(2)
    m = feature_metrics(etf[:, labels].double(), one_hot(labels, k))
    assert m["etf_distance"] < 1e-12 and m["equiangularity"] < 1e-12
    assert m["orthogonal_frame_distance"] > 0.1  # cosines are -1/(K-1), not 0


def test_random_features_are_not_collapsed():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 40, generator=g, dtype=torch.float64)
    y = one_hot(torch.arange(4).repeat_interleave(10), 4)
    m = feature_metrics(h, y, preactivation=h)
    assert m["nc1"] > 1 and m["nc1_trace_ratio"] > 1
    assert m["orthogonal_frame_distance"] > 0.05 and m["equinorm"] > 0.01
    assert 0.3 < m["negative_fraction"] < 0.7


def test_nc1_convention_with_one_over_k():
    """Hand-computed NC1: K=2 means ±e1, within-class noise ±s e1 and ±t e2."""
    s = 0.5
    h = torch.tensor([[1 + s, 1 - s, -1 + s, -1 - s], [0.3, -0.3, 0.3, -0.3]], dtype=torch.float64)
    y = one_hot(torch.tensor([0, 0, 1, 1]), 2)
    m = feature_metrics(h, y)
    # Σ_B = diag(1, 0); Σ_W = diag(s², 0.09); tr(Σ_W Σ_B^†)/K = s²/2
    assert m["nc1"] == pytest.approx(s**2 / 2, rel=1e-12)
    assert m["nc1_trace_ratio"] == pytest.approx((s**2 + 0.09) / 1.0, rel=1e-12)


def test_negative_fraction_threshold_and_ncc():
    pre = torch.tensor([[-1e-7, -2e-6, 0.0, 1.0]], dtype=torch.float64)
    h = torch.tensor([[0.0, 0.1, 1.0, 1.1]], dtype=torch.float64)
    y = one_hot(torch.tensor([0, 0, 1, 1]), 2)
    m = feature_metrics(h, y, predictions=torch.tensor([0, 1, 1, 1]), preactivation=pre)
    assert m["negative_fraction"] == 0.25  # only -2e-6 is below -1e-6
    assert m["ncc_agreement"] == 0.75


def test_dnc3_and_rank():
    means = torch.eye(5, 2, dtype=torch.float64)  # span{e1, e2}
    aligned = torch.randn(3, 2, dtype=torch.float64) @ means.T
    assert weight_metrics(aligned, means)["dnc3"] < 1e-14
    w = torch.zeros(3, 5, dtype=torch.float64)
    w[0, 4] = 1.0  # orthogonal to the span
    assert weight_metrics(w, means)["dnc3"] == pytest.approx(1.0)
    assert numerical_rank(torch.tensor([1.0, 0.5, 1e-4]), 1e-3) == 2
    assert numerical_rank(torch.zeros(3), 1e-3) == 0


def test_model_report_layout_and_scalars():
    m = fd.DeepUFM(3, 4, 5, 3, activation="relu")
    rep = fd.collapse_metrics(m)
    assert len(rep.layers) == 4 and len(rep.weights) == 3
    flat = rep.scalars()
    assert {"nc1/l1", "nc1/l4", "weight_rank/l3", "nc3"} <= set(flat)
    assert all(isinstance(v, float) for v in flat.values())
    assert not math.isnan(rep.nc3) and rep.nc3 > 0
    assert rep.layers[1]["negative_fraction"] > 0.2  # pre-activations of a random ReLU layer
