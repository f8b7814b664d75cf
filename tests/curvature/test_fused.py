"""The fused R-op of nn.Sequential MLPs (fastdnc.curvature.fused): exact against double backward for
every architecture it accepts (ReLU or Identity, with or without biases, a final LogSoftmax with
NLLLoss), Hessian and GGN (exact on either path), and the reason it gives for every Sequential it leaves to the generic
path."""

from __future__ import annotations

import pytest
import torch
from double_backward import autograd_products, rel
from torch import nn

import fastdnc as fd
from fastdnc.curvature.fused import why_layers_not_fused

torch.manual_seed(0)
X = torch.randn(11, 4, dtype=torch.float64)
LABELS = torch.arange(11) % 3


def mlp(act=nn.ReLU, bias=True, tail=()):
    torch.manual_seed(1)
    layers = [nn.Linear(4, 6, bias=bias), act(), nn.Linear(6, 5, bias=bias), act(), nn.Linear(5, 3, bias=bias)]
    return nn.Sequential(*layers, *tail).double()


ACCEPTED = {
    "ReLU, biases": (lambda: mlp(), nn.CrossEntropyLoss()),
    "Identity, no biases": (lambda: mlp(nn.Identity, bias=False), nn.CrossEntropyLoss()),
    "LogSoftmax + NLLLoss": (lambda: mlp(tail=(nn.LogSoftmax(dim=1),)), nn.NLLLoss()),
    "MSE": (lambda: mlp(), nn.MSELoss()),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_accepted_sequentials_are_fused_and_exact(name, curvature):
    build, loss = ACCEPTED[name]
    model = build()
    y = torch.randn(11, 3, dtype=torch.float64) if isinstance(loss, nn.MSELoss) else LABELS
    cls = fd.HessianOperator if curvature == "hessian" else fd.GGNOperator
    op = cls(model, loss, (X, y))
    # the GGN of NLLLoss after a LogSoftmax is taken at the log-probabilities: the generic path, said
    generic = name == "LogSoftmax + NLLLoss" and curvature == "ggn"
    assert (op.fused_reason is None) != generic and (not generic or "log-probabilities" in op.fused_reason)
    v = torch.randn(op.size, dtype=torch.float64)
    hv, ggnv, _ = autograd_products(model, loss, X, y, list(model.parameters()), v)
    assert rel(op @ v, hv if curvature == "hessian" else ggnv) < 1e-10


@pytest.mark.parametrize(
    "mods, reason",
    [
        ([nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)], "module 1 is Tanh, not ReLU or Identity"),
        ([nn.Linear(2, 3), nn.ReLU(inplace=True), nn.Linear(3, 2)], "an in-place ReLU"),
        ([nn.Linear(2, 3), nn.ReLU()], "does not end with a Linear layer"),
        ([nn.Conv1d(1, 1, 1)], "module 0 is Conv1d, not Linear"),
        ([nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.Identity(), nn.Linear(3, 2)], "mixes ReLU and Identity"),
        ([nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2, bias=False)], "some Linear layers have biases"),
    ],
)
def test_each_unfused_architecture_is_named(mods, reason):
    assert reason in why_layers_not_fused(mods)


def test_a_module_used_twice_is_named():
    lin = nn.Linear(3, 3)
    assert "used twice" in why_layers_not_fused([lin, nn.ReLU(), lin])


def test_a_model_outside_the_fused_set_keeps_the_exact_generic_path():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    op = fd.HessianOperator(model, nn.CrossEntropyLoss(), (X, LABELS))
    assert "Tanh" in op.fused_reason
    v = torch.randn(op.size, dtype=torch.float64)
    assert (
        rel(op @ v, autograd_products(model, nn.CrossEntropyLoss(), X, LABELS, list(model.parameters()), v)[0]) < 1e-10
    )
