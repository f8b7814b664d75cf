"""Every row of the expected-outlier table holds at a constructed DNC point: the rank of the exact
layer Hessian (fit term) of a UFM whose class means and weights have the collapsed structure."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc.theory import expected_outliers


def collapsed_ufm(k: int, n: int, d: int, depth: int, activation: str, loss: str) -> fd.DeepUFM:
    """Class means on one coordinate each (orthogonal, disjoint supports; a centred simplex for the
    linear CE model), weights that keep the class frame, and the DNC output geometry of the loss."""
    m = fd.DeepUFM(k, n, d, depth, activation=activation, loss=loss, dtype=torch.float64)
    eye = torch.eye(k, dtype=torch.float64)
    with torch.no_grad():
        h = torch.zeros(d, k * n, dtype=torch.float64)
        for c in range(k):
            col = eye[c] - 1.0 / k if (loss == "ce" and activation == "linear") else eye[c]
            h[:k, c * n : (c + 1) * n] = 1.3 * col[:, None]
        m.features.copy_(h)
        for w in m.weights[:-1]:
            w.zero_()
            w[:k, :k] = 0.9 * eye
        last = m.weights[-1]
        last.zero_()
        last[:, :k] = 2.0 * (eye - 1.0 / k) if loss == "ce" else 0.8 * eye
    return m


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("k", [3, 4])
def test_the_table_holds_at_constructed_dnc_points(loss, activation, k):
    depth = 3
    model = collapsed_ufm(k, 3, 2 * k + 1, depth, activation, loss)
    for layer in range(1, depth + 1):
        ev = fd.layer_hessian(model, layer).eigvalsh()
        rank = int((ev > 1e-9 * float(ev.max())).sum())
        assert rank == expected_outliers(loss, activation, layer == depth, k).count, (layer, rank)


def test_no_prediction_outside_the_theory():
    e = expected_outliers("huber", "relu", True, 10)
    assert e.count is None and "no DNC prediction for loss 'huber'" in e.reason
    assert expected_outliers("ce", "gelu", False, 10).count is None
