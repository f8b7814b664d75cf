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
