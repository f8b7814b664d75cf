"""NC metrics of any classifier by forward hooks agree with an independent computation from features
the test computes itself, whatever the batching; they equal the MLPHead's for the same network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastdnc as fd
from fastdnc.collapse import feature_metrics, weight_metrics


def independent(h: torch.Tensor, labels: torch.Tensor, k: int, predictions: torch.Tensor) -> dict:
    """The in-memory metrics of features (N × d) computed here (not through the hooks)."""
    targets = torch.nn.functional.one_hot(labels, k).T.to(h.dtype)
    return feature_metrics(h.T.to(torch.float64), targets.to(torch.float64), predictions=predictions, preactivation=h.T)


@pytest.mark.parametrize("batches", [1, 3])
def test_hooked_metrics_match_features_computed_by_hand(batches):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.arange(30) % 3
    chunks = torch.arange(30).tensor_split(batches)
    rep = fd.collapse_metrics(model, [(x[c], y[c]) for c in chunks], layers=[model[2], "4"])
    with torch.no_grad():
        h2 = model[1](model[0](x))
        h4 = model[3](model[2](h2))
        z = model(x)
    pred = z.argmax(1)
    assert rep.names == ["2", "4"] and len(rep.layers) == 3
    for got, h in zip(rep.layers, (h2, h4, z)):
        ref = independent(h, y, 3, pred)
        for key in (
            "nc1",
            "nc1_trace_ratio",
            "etf_distance",
            "orthogonal_frame_distance",
            "equinorm",
            "ncc_agreement",
            "negative_fraction",
        ):
            assert got[key] == pytest.approx(ref[key], rel=1e-10, abs=1e-12), key
    means4 = torch.stack([h4[y == c].mean(0) for c in range(3)], 1)
    assert rep.weights[1]["dnc3"] == pytest.approx(weight_metrics(model[4].weight.detach(), means4)["dnc3"], rel=1e-10)


def test_the_default_layers_and_refusals():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    assert fd.collapse_metrics(model, (x, y)).names == ["0", "2"]
    with pytest.raises(ValueError, match="needs its data"):
        fd.collapse_metrics(model)
    with pytest.raises(ValueError, match="not a submodule"):
        fd.collapse_metrics(model, (x, y), layers=[nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="class\\(es\\) \\[2\\] have no samples"):
        fd.collapse_metrics(model, (x, y % 2))
