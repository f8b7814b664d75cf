"""The operator base refuses inputs it cannot mean: lists of numbers, empty blocks, unknown backends."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc.curvature.kronecker import Factor, KroneckerOperator


def _operators():
    linear, relu = fd.DeepUFM(3, 2, 5, 3), fd.DeepUFM(3, 2, 5, 3, activation="relu", loss="ce")
    return {
        "kronecker": fd.layer_hessian(linear, 2),
        "gauss-newton": fd.layer_hessian(relu, 2),
        "full": fd.hessian(relu),
    }


@pytest.mark.parametrize("name", ["kronecker", "gauss-newton", "full"])
def test_lists_of_numbers_and_empty_blocks_are_refused(name):
    op = _operators()[name]
    with pytest.raises(TypeError, match="parameter-shaped tensors"):
        op @ [1.0] * op.size
    with pytest.raises(TypeError, match="parameter-shaped tensors"):
        op @ []
    with pytest.raises(ValueError, match="no columns"):
        op @ torch.zeros(op.size, 0)
    with pytest.raises(ValueError, match="k >= 1"):
        op.matmat(torch.zeros(op.size, 0))
    v = torch.randn(op.size)
    assert (op @ v).shape == (op.size,)  # the valid forms still work


@pytest.mark.parametrize("backend", ["bogus", "CPP", "", None, 3])
def test_unknown_backends_are_errors_for_every_operator(backend):
    model = fd.DeepUFM(3, 2, 5, 3, activation="relu", loss="ce")
    with pytest.raises(ValueError, match="unknown backend"):
        fd.layer_hessian(fd.DeepUFM(3, 2, 5, 3), 2, backend=backend)
    with pytest.raises(ValueError, match="unknown backend"):
        fd.layer_hessian(model, 2, backend=backend)
    with pytest.raises(ValueError, match="unknown backend"):
        fd.feature_hessian(model, backend=backend)
    with pytest.raises(ValueError, match="unknown backend"):
        KroneckerOperator(Factor.dense(torch.eye(2)), Factor.dense(torch.eye(3)), backend=backend)


def test_curvature_names_the_second_derivative_everywhere():
    """One setting, one name: ``curvature`` is "hessian" or "ggn" on every operator that is one of them;
    the former boolean names still work, with a DeprecationWarning, and a bad value is refused."""
    import fastdnc as fd
    from fastdnc import distributed
    from fastdnc.curvature.full import LayeredHessian

    torch.manual_seed(0)
    relu = fd.DeepUFM(3, 2, 4, 2, activation="relu", loss="ce", dtype=torch.float64)
    linear = fd.DeepUFM(3, 2, 4, 2, dtype=torch.float64)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    data, loss = (torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])), torch.nn.CrossEntropyLoss()
    for model in (relu, linear):
        assert fd.hessian(model).curvature == "hessian" and fd.ggn(model).curvature == "ggn"
    assert (
        fd.HessianOperator(net, loss, data).curvature == "hessian"
        and fd.GGNOperator(net, loss, data).curvature == "ggn"
    )
    for curvature in ("hessian", "ggn"):
        assert fd.layer_hessian(net, net[2], data=data, loss_fn=loss, curvature=curvature).curvature == curvature
    with pytest.warns(DeprecationWarning, match="curvature='ggn'"):
        old = LayeredHessian(relu, ggn=True)
    assert old.curvature == "ggn"
    torch.testing.assert_close(old.to_dense(), fd.ggn(relu).to_dense(), rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="gauss_newton= is deprecated"):
        assert distributed.sharded_hessian(relu, gauss_newton=True).curvature == "ggn"
    for bad in ("GGN", "fisher", True):
        with pytest.raises(ValueError, match="curvature must be 'hessian' or 'ggn'"):
            LayeredHessian(relu, curvature=bad)
        with pytest.raises(ValueError, match="curvature must be 'hessian' or 'ggn'"):
            fd.layer_hessian(relu, 1, curvature=bad)
