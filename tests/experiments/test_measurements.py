"""The training callbacks of the UFM experiments: keys of the one vocabulary, values against an
independent computation, and older runs' histories renamed."""

from __future__ import annotations

import math

import pytest
import torch

from fastdnc.alignment import alignment_summary, eigenvector_fidelity, gradient_coefficients
from fastdnc.experiments.measurements import OLD_KEYS, alignment_scalars, dnc_callback, upgrade_history
from fastdnc.theory import optimum_model
from fastdnc.training import History


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = optimum_model(4, 5, 12, 3, 5e-3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from the optimum: nothing degenerate
    return m


def test_the_summary_is_the_mean_and_max_of_the_matrices():
    f = torch.tensor([[0.9, 0.2, 0.4], [0.1, 0.7, 0.3], [0.5, 0.6, 0.8]], dtype=torch.float64)
    kappa = f.flip(0)
    s = alignment_summary(f, kappa)
    assert s["f_same"] == pytest.approx((0.9 + 0.7 + 0.8) / 3) and s["f_min"] == pytest.approx(0.1)
    assert s["f_cross"] == pytest.approx((0.2 + 0.4 + 0.1 + 0.3 + 0.5 + 0.6) / 6)
    assert s["kappa_same"] == pytest.approx((0.5 + 0.7 + 0.4) / 3) and s["kappa_cross_max"] == pytest.approx(0.9)
    one = alignment_summary(torch.ones(1, 1), torch.ones(1, 1))
    assert math.isnan(one["f_cross"]) and one["kappa_cross_max"] == 0.0


def test_the_callback_logs_each_layer_in_the_shared_vocabulary(model):
    logged = dnc_callback([1, 2], [2], [7])(model, 7)
    keys = {"f_same", "f_cross", "f_min", "kappa_same", "kappa_cross_max"}
    assert set(logged) == {f"{k}/l{l}" for k in keys for l in (1, 2)} | {"spectrum/l2"}
    f, kappa = eigenvector_fidelity(model, 2), gradient_coefficients(model, 2)
    assert logged["f_min/l2"] == float(f.min()) and logged["kappa_cross_max/l2"] == float(
        kappa[~torch.eye(4, dtype=torch.bool)].max()
    )
    assert alignment_scalars(model, 1) == {k: v for k, v in logged.items() if k.endswith("/l1")}
    assert logged["spectrum/l2"] == sorted(logged["spectrum/l2"], reverse=True)
    assert dnc_callback([1], [1], [7])(model, 8).keys() == {f"{k}/l1" for k in keys}  # no spectrum off its steps


def test_an_older_history_is_renamed_and_a_resumed_one_merged():
    h = History()
    h.append(0, {"loss": 1.0, "f_diag/l1": 0.5, "kappa_off/l2": 0.1})
    h.append(10, {"loss": 0.5, "f_same/l1": 0.6, "kappa_cross_max/l2": 0.05})  # resumed with the new names
    upgrade_history(h)
    assert h["f_same/l1"] == [0.5, 0.6] and h["kappa_cross_max/l2"] == [0.1, 0.05] and h["loss"] == [1.0, 0.5]
    assert not any(k.split("/")[0] in OLD_KEYS for k in h.keys())
