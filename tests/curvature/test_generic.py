"""HessianOperator / GGNOperator for any nn.Module: dense torch.func oracle, curvlinops, errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

import fastdnc as fd


def mlp(bias=True, act=nn.ReLU):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 7, bias=bias), act(), nn.Linear(7, 6, bias=bias), act(), nn.Linear(6, 3, bias=bias)
    ).double()


def cnn():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()


def data(kind, loss):
    g = torch.Generator().manual_seed(2)
    x = (
        torch.randn(23, 5, generator=g, dtype=torch.float64)
        if kind == "mlp"
        else torch.randn(23, 1, 6, 6, generator=g, dtype=torch.float64)
    )
    y = (
        torch.randint(0, 3, (23,), generator=g)
        if isinstance(loss, nn.CrossEntropyLoss)
        else torch.randn(23, 3, generator=g, dtype=torch.float64)
    )
    return x, y, [(x[:10], y[:10]), (x[10:17], y[10:17]), (x[17:], y[17:])]  # unequal batches


def flat_loss(model, loss, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def f(t):
        d, i = {}, 0
        for n, s in zip(names, shapes):
            d[n] = t[i : i + s.numel()].reshape(s)
            i += s.numel()
        return loss(functional_call(model, d, (x,)), y)

    return f, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def dense_ggn(model, loss, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def out(t):
        d, i = {}, 0
        for n, s in zip(names, shapes):
            d[n] = t[i : i + s.numel()].reshape(s)
            i += s.numel()
        return functional_call(model, d, (x,))

    z = out(theta)
    j = jacrev(out)(theta).reshape(z.numel(), -1)
    h = hessian(lambda zz: loss(zz.reshape(z.shape), y))(z.reshape(-1))
    return j.T @ h @ j


CASES = [
    ("mlp", nn.CrossEntropyLoss()),
    ("mlp", nn.MSELoss()),
    ("mlp", nn.MSELoss(reduction="sum")),
    ("cnn", nn.CrossEntropyLoss()),
    ("cnn", nn.MSELoss()),
]


@pytest.mark.parametrize("kind, loss", CASES, ids=lambda c: c if isinstance(c, str) else type(c).__name__)
@pytest.mark.parametrize("fused", [None, False])
def test_hessian_and_ggn_match_dense(kind, loss, fused):
    model = mlp() if kind == "mlp" else cnn()
    x, y, batches = data(kind, loss)
    f, theta = flat_loss(model, loss, x, y)
    h_dense, g_dense = hessian(f)(theta), dense_ggn(model, loss, x, y)
    v = torch.randn(theta.numel(), 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for mode in ("forward-over-reverse", "reverse-over-reverse"):
        op = fd.HessianOperator(model, loss, batches, fused=fused, mode=mode, check_deterministic=True)
        assert op.fused == (kind == "mlp" and fused is None)
        assert float((op @ v - h_dense @ v).norm() / (h_dense @ v).norm()) <= 1e-10
    gop = fd.GGNOperator(model, loss, batches, fused=fused)
    assert float((gop @ v - g_dense @ v).norm() / (g_dense @ v).norm()) <= 1e-10


def test_parameter_subset_and_list_products():
    model = mlp()
    loss = nn.CrossEntropyLoss()
    x, y, batches = data("mlp", loss)
    w = model[2].weight
    op = fd.HessianOperator(model, loss, (x, y), params=[w])
    assert not op.fused and op.shape == (42, 42)
    f, theta = flat_loss(model, loss, x, y)
    full = hessian(f)(theta)
    start = model[0].weight.numel() + model[0].bias.numel()
    block = full[start : start + 42, start : start + 42]
    v = torch.randn(6, 7, dtype=torch.float64)
    torch.testing.assert_close(op @ v, (block @ v.reshape(-1)).reshape(6, 7))
    torch.testing.assert_close((op @ [v])[0], op @ v)
    sp = op.to_scipy()
    torch.testing.assert_close(torch.from_numpy(sp @ v.reshape(-1).numpy()), block @ v.reshape(-1))


def test_errors():
    model = mlp()
    loss = nn.CrossEntropyLoss()
    x, y, batches = data("mlp", loss)
    with pytest.raises(ValueError, match="not parameters of the model"):
        fd.HessianOperator(model, loss, batches, params=[torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="reduction='mean' or 'sum'"):
        fd.HessianOperator(model, nn.CrossEntropyLoss(reduction="none"), batches)
    with pytest.raises(ValueError, match="mode must be one of"):
        fd.HessianOperator(model, loss, batches, mode="finite-differences")
    with pytest.raises(ValueError, match="fused path cannot take this model: module 0 is Conv2d"):
        fd.HessianOperator(cnn(), loss, data("cnn", loss)[2], fused=True)
    op = fd.HessianOperator(model, loss, batches)
    with pytest.raises(ValueError, match="does not fit an operator"):
        op @ torch.zeros(3, dtype=torch.float64)

    class Shuffled:
        def __iter__(self):
            perm = torch.randperm(23)
            return iter([(x[perm[:11]], y[perm[:11]]), (x[perm[11:]], y[perm[11:]])])

    dropout = nn.Sequential(nn.Linear(5, 7), nn.Dropout(0.5), nn.Linear(7, 3)).double().train()
    with pytest.raises(fd.curvature.NonDeterministicError, match="dropout"):
        fd.HessianOperator(dropout, loss, batches)  # checked by default (one extra loss evaluation)
    with pytest.raises(fd.curvature.NonDeterministicError, match="dropout"):
        fd.HessianOperator(dropout, loss, batches, check_deterministic=False).check_deterministic()
    # a re-iterable loader that reshuffles is read once into a fixed list of batches: deterministic
    fd.HessianOperator(model, loss, Shuffled(), check_deterministic=True)


@pytest.mark.skipif(importlib.util.find_spec("curvlinops") is None, reason="curvlinops (peers extra) not installed")
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_agrees_with_curvlinops(kind):
    from curvlinops import GGNLinearOperator, HessianLinearOperator

    model = mlp() if kind == "mlp" else cnn()
    loss = nn.CrossEntropyLoss()
    _, _, batches = data(kind, loss)
    params = list(model.parameters())
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for ours, theirs in (
        (fd.HessianOperator(model, loss, batches), HessianLinearOperator),
        (fd.GGNOperator(model, loss, batches), GGNLinearOperator),
    ):
        ref = theirs(model, loss, params, batches, check_deterministic=False) @ v
        assert float((ours @ v - ref).norm() / ref.norm()) <= 1e-8


def test_one_output_regression_takes_the_generic_path():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1)).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 1, dtype=torch.float64)
    op = fd.HessianOperator(model, nn.MSELoss(), (x, y))
    assert not op.fused and "one output" in op.fused_reason
    f, theta = flat_loss(model, nn.MSELoss(), x, y)
    v = torch.randn(theta.numel(), dtype=torch.float64)
    torch.testing.assert_close(op @ v, hessian(f)(theta) @ v)
