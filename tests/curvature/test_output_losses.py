"""The losses of the network output (fastdnc.curvature.output_losses): gradient, Hessian product and
Hessian root against autograd of the loss written out (float64, 1e-12), and the registry through
which the drop-in operators fuse a torch loss (a loss added as one class, Huber, included)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import hessian

import fastdnc as fd
from fastdnc.curvature.output_losses import (
    FUSED,
    Huber,
    SigmoidBinaryCrossEntropy,
    SoftmaxCrossEntropy,
    SquaredError,
)

K, N = 4, 7
G = torch.Generator().manual_seed(0)
Z = 2 * torch.randn(K, N, generator=G, dtype=torch.float64)
S = torch.rand(N, generator=G, dtype=torch.float64) + 0.1
REAL = torch.randn(K, N, generator=G, dtype=torch.float64)
UNIT = torch.rand(K, N, generator=G, dtype=torch.float64)
SOFT = torch.softmax(torch.randn(K, N, generator=G, dtype=torch.float64), 0)

# (the OutputLoss, φ of one column (K,) and its target (K,), the targets)
CASES = {
    "squared error": (lambda z: SquaredError(z, REAL, S), lambda z, t: 0.5 * (z - t).square().sum(), REAL),
    "softmax cross-entropy": (
        lambda z: SoftmaxCrossEntropy(z, SOFT, S),
        lambda z, t: -(t * torch.log_softmax(z, 0)).sum(),
        SOFT,
    ),
    "sigmoid BCE": (
        lambda z: SigmoidBinaryCrossEntropy(z, UNIT, S),
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction="sum"),
        UNIT,
    ),
    "Huber": (lambda z: Huber(z, REAL, S, 0.8), lambda z, t: F.huber_loss(z, t, delta=0.8, reduction="sum"), REAL),
}


def total(phi, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return sum(S[i] * phi(z[:, i], targets[:, i]) for i in range(N))


@pytest.mark.parametrize("name", CASES)
def test_gradient_hessian_product_and_root_against_autograd(name):
    make, phi, targets = CASES[name]
    loss = make(Z)
    z = Z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(total(phi, z, targets), z, create_graph=True)
    torch.testing.assert_close(loss.gradient(), grad.detach(), rtol=0, atol=1e-12)
    zdot = torch.randn(3, K, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hz = torch.stack([torch.autograd.grad(grad, z, d, retain_graph=True)[0] for d in zdot])
    torch.testing.assert_close(loss.hessian_product(zdot), hz, rtol=0, atol=1e-12)
    root = loss.hessian_root()  # (K', K, N): L_i L_iᵀ = s_i ∇²φ_i
    for i in range(N):
        want = S[i] * hessian(phi)(Z[:, i], targets[:, i])
        torch.testing.assert_close(root[:, :, i].T @ root[:, :, i], want, rtol=0, atol=1e-12)


def test_the_registry_names_every_fused_torch_loss():
    assert FUSED == {
        nn.MSELoss: SquaredError,
        nn.CrossEntropyLoss: SoftmaxCrossEntropy,
        nn.BCEWithLogitsLoss: SigmoidBinaryCrossEntropy,
        nn.HuberLoss: Huber,
    }


def double_backward(model, loss_fn, x, y):
    params = list(model.parameters())
    out = loss_fn(model(x), y)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(out, params, create_graph=True)])
    rows = [torch.autograd.grad(g[j], params, retain_graph=True) for j in range(g.numel())]
    return torch.stack([torch.cat([t.reshape(-1) for t in r]) for r in rows])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_torch_loss_with_an_output_loss_takes_the_fused_path_exactly(reduction):
    """HuberLoss, added as one class, is fused for a ReLU MLP and equals double backward; a loss
    without a class (SmoothL1Loss) keeps the generic path and says why."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, K)).double()
    x = torch.randn(9, 3, dtype=torch.float64)
    y = 1.5 * torch.randn(9, K, dtype=torch.float64)  # residuals on both sides of δ
    huber = nn.HuberLoss(delta=0.6, reduction=reduction)
    for cls in (fd.HessianOperator, fd.GGNOperator):
        op = cls(model, huber, [(x[:4], y[:4]), (x[4:], y[4:])])
        assert op.fused_reason is None, op.fused_reason
    H = fd.HessianOperator(model, huber, [(x[:4], y[:4]), (x[4:], y[4:])]).to_dense()
    w = (4 / 9, 5 / 9) if reduction == "mean" else (1.0, 1.0)  # a mean over batches weighs each n_b/N
    ref = w[0] * double_backward(model, huber, x[:4], y[:4]) + w[1] * double_backward(model, huber, x[4:], y[4:])
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-12)
    smooth = fd.HessianOperator(model, nn.SmoothL1Loss(beta=0.6), (x, y))
    assert "the loss is SmoothL1Loss, not one of" in smooth.fused_reason and "HuberLoss" in smooth.fused_reason
