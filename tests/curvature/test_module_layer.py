"""The exact layer Hessian of an nn.Linear inside any model agrees with the dense double-backward
Hessian of that weight to 1e-10 (float64) on drawn models: heads of Linear / ReLU / GELU / Tanh /
LayerNorm layers, convolutional fronts, residual blocks, per-token layers, with or without biases;
the structured path is taken exactly where it applies and says why when it does not."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fastdnc as fd
from fastdnc.curvature.module_layer import ModuleLayerHessian


def dense_layer_hessian(model, loss_fn, batches, params, ggn: bool = False) -> torch.Tensor:
    """Σ_b (n_b/N) ∇²ℓ_b over ``params`` (in their order) by autograd double backward (or the GGN
    J^T ∇²ℓ J), the reference of every test here."""
    n = sum(x.shape[0] for x, _ in batches)
    size = sum(p.numel() for p in params)
    out = torch.zeros(size, size, dtype=torch.float64)
    for x, y in batches:
        w = x.shape[0] / n
        if ggn:
            z = model(x)
            jac = torch.stack(
                [
                    torch.cat([g.reshape(-1) for g in torch.autograd.grad(z.reshape(-1)[i], params, retain_graph=True)])
                    for i in range(z.numel())
                ]
            )
            zz = z.detach().requires_grad_()
            gz = torch.autograd.grad(loss_fn(zz, y), zz, create_graph=True)[0].reshape(-1)
            hz = torch.stack(
                [torch.autograd.grad(gz[i], zz, retain_graph=True)[0].reshape(-1) for i in range(gz.numel())]
            )
            out += w * jac.T @ hz @ jac
            continue
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)])
        rows = [
            torch.cat(
                [t.reshape(-1) for t in torch.autograd.grad(g[i], params, retain_graph=True, materialize_grads=True)]
            )
            for i in range(size)
        ]
        out += w * torch.stack(rows)
    return out


def augmented_order(layer: nn.Linear) -> torch.Tensor:
    """The positions of (vec W, b) in the row-major vec of [W | b]."""
    p, q = layer.weight.shape
    idx = torch.arange(p * (q + 1)).reshape(p, q + 1)
    return torch.cat([idx[:, :q].reshape(-1), idx[:, q]])


class Residual(nn.Module):
    def __init__(self, width: int, act: nn.Module) -> None:
        super().__init__()
        self.inner, self.act = nn.Linear(width, width), act

    def forward(self, x):
        return x + self.act(self.inner(x))


ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky": lambda: nn.LeakyReLU(0.1)}


@st.composite
def models(draw):
    """A classifier: an optional conv front, a head of Linear layers with activations (and optionally
    a LayerNorm and a residual block), K outputs; which Linear to differentiate; the loss."""
    torch.manual_seed(draw(st.integers(0, 2**16)))
    act = draw(st.sampled_from(sorted(ACTS)))
    k = draw(st.integers(2, 4))
    conv = draw(st.booleans())
    layers: list[nn.Module] = [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten()] if conv else []
    width = 2 * 3 * 3 if conv else draw(st.integers(2, 5))
    for _ in range(draw(st.integers(1, 2))):
        out = draw(st.integers(2, 5))
        layers += [nn.Linear(width, out, bias=draw(st.booleans())), ACTS[act]()]
        width = out
    if draw(st.booleans()):
        layers.append(nn.LayerNorm(width))
    if draw(st.booleans()):
        layers.append(Residual(width, ACTS[act]()))
    layers.append(nn.Linear(width, k, bias=draw(st.booleans())))
    model = nn.Sequential(*layers).double()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    layer = draw(st.sampled_from(linears))
    n = draw(st.integers(3, 7))
    x = (
        torch.randn(n, 1, 5, 5, dtype=torch.float64)
        if conv
        else torch.randn(n, linears[0].in_features, dtype=torch.float64)
    )
    loss_name = draw(st.sampled_from(["ce", "mse", "ce-smooth"]))
    if loss_name == "mse":
        loss_fn, y = nn.MSELoss(), torch.randn(n, k, dtype=torch.float64)
    else:
        loss_fn, y = nn.CrossEntropyLoss(label_smoothing=0.1 if loss_name == "ce-smooth" else 0.0), torch.arange(n) % k
    split = draw(st.integers(1, n - 1))
    batches = [(x[:split], y[:split]), (x[split:], y[split:])] if draw(st.booleans()) else [(x, y)]
    return model, layer, loss_fn, batches, draw(st.booleans()) and layer.bias is not None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_drawn_models_against_dense_autograd(case):
    model, layer, loss_fn, batches, bias = case
    op = fd.layer_hessian(model, layer, data=batches, loss_fn=loss_fn, bias=bias)
    assert isinstance(op, ModuleLayerHessian) and not op.structure.startswith("generic"), op.structure
    params = [layer.weight] + ([layer.bias] if bias else [])
    ref = dense_layer_hessian(model, loss_fn, batches, params)
    got = op.to_dense()
    if bias:
        order = augmented_order(layer)
        got = got[order][:, order]
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12 * max(1.0, float(ref.abs().max())))
    torch.testing.assert_close(op.diagonal()[order] if bias else op.diagonal(), ref.diagonal(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act, exact", [("relu", True), ("leaky", True), ("gelu", False), ("tanh", False)])
def test_piecewise_linear_layers_above_make_the_gauss_newton_block_the_hessian(act, exact):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), ACTS[act](), nn.Linear(6, 5), ACTS[act](), nn.Linear(5, 3)).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.arange(9) % 3
    op = fd.layer_hessian(model, "0", data=(x, y), loss_fn=nn.CrossEntropyLoss())
    assert op.gauss_newton_is_exact is exact and len(op.parts) == (1 if exact else 2)
    assert ("this block is the Hessian" in op.structure) is exact
    ggn = fd.layer_hessian(model, model[0], data=(x, y), loss_fn=nn.CrossEntropyLoss(), curvature="ggn")
    ref = dense_layer_hessian(model, nn.CrossEntropyLoss(), [(x, y)], [model[0].weight], ggn=True)
    torch.testing.assert_close(ggn.to_dense(), ref, rtol=1e-10, atol=1e-13)
    if exact:  # the GGN is the Hessian, and its spectrum comes from the sample-space Gram or the assembly
        torch.testing.assert_close(op.eigvalsh(), torch.linalg.eigvalsh(ref), rtol=1e-10, atol=1e-13)
        assert op.gram_size() == 27 and op.sample_gram() is not None


class PerToken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):  # (N, T, 3) → mean over tokens
        return self.head(torch.relu(self.proj(x)).mean(1))


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(self.a(torch.relu(self.a(x))))


class Mixing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.mean(0, keepdim=True))  # the batch mean couples the samples


@pytest.mark.parametrize(
    "make, layer, shape, reason",
    [
        (PerToken, "proj", (7, 5, 3), "not one vector per sample"),
        (Twice, "a", (7, 3), "runs 2 times in one forward pass"),
        (Mixing, "a", (7, 3), "influence each other's outputs"),
        (
            lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(18, 2)),
            "0",
            (7, 1, 5, 5),
            "not an nn.Linear",
        ),
    ],
    ids=["per-token", "used-twice", "batch-mixing", "conv"],
)
def test_the_generic_path_is_exact_and_says_why(make, layer, shape, reason):
    torch.manual_seed(1)
    model = make().double()
    x, y = torch.randn(*shape, dtype=torch.float64), torch.arange(7) % 2
    op = fd.layer_hessian(model, layer, data=(x, y), loss_fn=nn.CrossEntropyLoss())
    assert op.structure.startswith("generic:") and reason in op.structure, op.structure
    mod = model.get_submodule(layer)
    ref = dense_layer_hessian(model, nn.CrossEntropyLoss(), [(x, y)], [mod.weight])
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-13)


def test_a_loss_that_couples_samples_or_is_not_convex_takes_the_generic_path():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    coupled = lambda z, t: ((z - t).sum(0) ** 2).sum()  # noqa: E731
    op = fd.layer_hessian(model, "0", data=(x, y), loss_fn=coupled, reduction="sum")
    assert "couples the samples" in op.structure
    torch.testing.assert_close(op.to_dense(), dense_layer_hessian(model, coupled, [(x, y)], [model[0].weight]))
    concave = lambda z, t: -((z - t) ** 2).sum()  # noqa: E731
    op = fd.layer_hessian(model, "0", data=(x, y), loss_fn=concave, reduction="sum")
    assert "not positive semidefinite" in op.structure
    torch.testing.assert_close(op.to_dense(), dense_layer_hessian(model, concave, [(x, y)], [model[0].weight]))


def test_calls_that_cannot_take_a_model_say_which_can():
    model = nn.Sequential(nn.Linear(3, 2))
    x, y = torch.randn(4, 3), torch.arange(4) % 2
    with pytest.raises(ValueError, match=r"needs its data and loss: fd.layer_hessian\(model, layer, data="):
        fd.layer_hessian(model, model[0])
    with pytest.raises(ValueError, match="no submodule 'fc'.*its linear layers: \\['0'\\]"):
        fd.layer_hessian(model, "fc", data=(x, y), loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match=r"fd.hessian takes a DeepUFM or an MLPHead.*fd.HessianOperator\(model"):
        fd.hessian(model)
    with pytest.raises(TypeError, match=r"fd.ggn takes a DeepUFM .*fd.GGNOperator"):
        fd.ggn(model)
    with pytest.raises(TypeError, match=r"fd.alignment takes a DeepUFM.*fd.analyze\(model, data, loss_fn\)"):
        fd.alignment.class_mean_pairs(model, 1)
    with pytest.raises(TypeError, match="top_eigenpairs needs a DeepUFM"):
        fd.top_eigenpairs(model)
    with pytest.raises(ValueError, match="holds its own data and loss"):
        fd.layer_hessian(fd.DeepUFM(3, 2, 4, 2), 1, data=(x, y), loss_fn=nn.MSELoss())
