"""The drop-in operators never return a silently wrong Hessian: whatever changes what a module
computes (hooks, pruning, patched forwards and functions, ``.data`` edits, buffers, parameters held
in a plain list, weight_norm) gives products within 1e-10 of autograd double backward of the model as
it is, or a clear refusal, on the fused path (an ``nn.Sequential``), on the generic path (the same
layers in a module of the user's own) and through ``fastdnc.compat.curvlinops``."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, prune

import fastdnc as fd
from fastdnc.compat import curvlinops

LOSS = nn.CrossEntropyLoss()


class Net(nn.Module):
    """The layers of :func:`sequential` in a module of the user's own (the generic path)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.act, self.l2 = nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x):
        return self.l2(self.act(self.l1(x)))

    def __getitem__(self, i):
        return [self.l1, self.act, self.l2][i]


def sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))


def own_module() -> Net:
    torch.manual_seed(0)
    return Net()


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(20, 5, generator=g), torch.randint(0, 3, (20,), generator=g)


def double_backward(model, x, y, ggn: bool = False) -> torch.Tensor:
    """The dense Hessian (or GGN) of LOSS(model(x), y) over model.parameters() by autograd on the
    model as it is (hooks, pre-hooks and patched code run as in training)."""
    params = list(model.parameters())
    with torch.enable_grad():
        z = model(x)
        if ggn:
            zf = z.reshape(-1)
            jac = torch.stack(
                [
                    torch.cat([g.reshape(-1) for g in torch.autograd.grad(zf[i], params, retain_graph=True)])
                    for i in range(zf.numel())
                ]
            )
            zz = z.detach().requires_grad_()
            gz = torch.autograd.grad(LOSS(zz, y), zz, create_graph=True)[0].reshape(-1)
            hz = torch.stack(
                [torch.autograd.grad(gz[i], zz, retain_graph=True)[0].reshape(-1) for i in range(gz.numel())]
            )
            return jac.T @ hz @ jac
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(LOSS(z, y), params, create_graph=True)])
        rows = [
            torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True, materialize_grads=True)
            for i in range(g.numel())
        ]
    return torch.stack([torch.cat([t.reshape(-1) for t in r]) for r in rows])


# (change made before the operator is built, change made after its first product)
def _global_hook(m):
    return nn.modules.module.register_module_forward_hook(
        lambda mod, i, o: o * 1.5 if isinstance(mod, nn.Linear) else None
    )


def _global_pre_hook(m):
    return nn.modules.module.register_module_forward_pre_hook(lambda mod, i: (i[0] * 0.5,) if mod is m[2] else None)


CHANGES = {
    "forward hook": (lambda m: m[0].register_forward_hook(lambda mod, i, o: o * 2), None),
    "forward pre-hook": (lambda m: m[2].register_forward_pre_hook(lambda mod, i: (i[0] * 0.7,)), None),
    "global forward hook": (_global_hook, None),
    "global forward pre-hook": (_global_pre_hook, None),
    "pruning": (lambda m: prune.random_unstructured(m[0], "weight", 0.5), None),
    "instance forward": (
        lambda m: setattr(m[0], "forward", lambda x: nn.functional.linear(x, 2 * m[0].weight, m[0].bias)),
        None,
    ),
    "hook after the first product": (None, lambda m: m[0].register_forward_hook(lambda mod, i, o: o * 2)),
    ".data edit": (None, lambda m: m[0].weight.data.mul_(1.7)),
    ".data assignment": (None, lambda m: setattr(m[2].bias, "data", m[2].bias.data + 0.5)),
    "backward hook": (lambda m: m[2].register_full_backward_hook(lambda mod, gi, go: (gi[0] * 2,)), None),
}


@pytest.fixture(params=["fused path", "generic path"])
def make(request):
    return sequential if request.param == "fused path" else own_module


@pytest.fixture(params=["HessianOperator", "compat.curvlinops"])
def build(request):
    if request.param == "HessianOperator":
        return lambda model, x, y: fd.HessianOperator(model, LOSS, (x, y))
    return lambda model, x, y: curvlinops.HessianLinearOperator(model, LOSS, list(model.parameters()), [(x, y)])


@pytest.mark.parametrize("change", list(CHANGES))
def test_changed_computations_are_exact(make, build, change):
    before, after = CHANGES[change]
    model, (x, y) = make(), data()
    handle = before(model) if before else None
    try:
        op = build(model, x, y)
        op @ torch.ones(op.size)  # fill the caches
        handle = after(model) if after else handle
        torch.testing.assert_close(op.to_dense(), double_backward(model, x, y), rtol=1e-10, atol=1e-12)
        if hasattr(op, "fused"):
            assert not op.fused or change in (".data edit", ".data assignment")
    finally:
        if hasattr(handle, "remove"):
            handle.remove()


def test_a_patched_class_forward_and_a_patched_function_are_exact(monkeypatch, make):
    model, (x, y) = make(), data()
    monkeypatch.setattr(nn.Linear, "forward", lambda self, t: nn.functional.linear(t, 2 * self.weight, self.bias))
    op = fd.HessianOperator(model, LOSS, (x, y))
    assert not op.fused and ("Linear.forward is not torch's own" in op.fused_reason or isinstance(model, Net))
    torch.testing.assert_close(op.to_dense(), double_backward(model, x, y), rtol=1e-10, atol=1e-12)
    monkeypatch.undo()
    # a patched torch function passes every structural check: the output comparison catches it
    linear = nn.functional.linear
    monkeypatch.setattr(nn.functional, "linear", lambda t, w, b=None: linear(t, 1.25 * w, b))
    model = sequential()
    op = fd.HessianOperator(model, LOSS, (x, y))
    assert not op.fused and "differs from the fused layers'" in op.fused_reason
    torch.testing.assert_close(op.to_dense(), double_backward(model, x, y), rtol=1e-10, atol=1e-12)


def test_a_buffer_changed_after_the_first_product_is_seen(build):
    class WithBuffer(Net):
        def __init__(self):
            super().__init__()
            self.register_buffer("shift", torch.zeros(6))

        def forward(self, x):
            return self.l2(torch.tanh(self.l1(x) + self.shift))

    torch.manual_seed(0)
    model, (x, y) = WithBuffer(), data()
    op = build(model, x, y)
    op @ torch.ones(op.size)
    model.shift.data.add_(1.0)  # no version bump
    torch.testing.assert_close(op.to_dense(), double_backward(model, x, y), rtol=1e-10, atol=1e-12)


def test_the_fused_ggn_sees_data_edits():
    model, (x, y) = sequential(), data()
    op = fd.GGNOperator(model, LOSS, (x, y))
    assert op.fused
    op @ torch.ones(op.size)
    model[0].weight.data.mul_(1.7)
    torch.testing.assert_close(op.to_dense(), double_backward(model, x, y, ggn=True), rtol=1e-10, atol=1e-12)


def test_a_parameter_held_in_a_plain_list_is_refused_by_name():
    class Listed(Net):
        def __init__(self):
            super().__init__()
            self.ws = [self.l1.weight]  # a plain list: not a registered parameter of its own

        def forward(self, x):
            return self.l2(torch.relu(x @ self.ws[0].T + self.l1.bias))

    torch.manual_seed(0)
    model, (x, y) = Listed(), data()
    for build in (
        lambda: fd.HessianOperator(model, LOSS, (x, y)),
        lambda: fd.GGNOperator(model, LOSS, (x, y)),
        lambda: curvlinops.HessianLinearOperator(model, LOSS, list(model.parameters()), [(x, y)]),
    ):
        with pytest.raises(ValueError, match=r"uses parameters \['l1.weight'\] without going through"):
            build()


@pytest.mark.parametrize("style", ["parametrizations.weight_norm", "weight_norm (old)"])
def test_weight_norm_is_refused_because_pytorch_differentiates_it_wrongly(make, style):
    model, (x, y) = make(), data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if style == "weight_norm (old)":
            nn.utils.weight_norm(model[0])
        else:
            parametrizations.weight_norm(model[0])
    with pytest.raises(fd.curvature.MissingDerivativeError, match="weight_norm.*second derivative"):
        fd.HessianOperator(model, LOSS, (x, y))
    # the other layers alone are exact
    op = fd.HessianOperator(model, LOSS, (x, y), params=list(model[2].parameters()))
    assert op.size == 21


def test_backward_hooks_run_under_autograd_and_are_refused_where_torch_func_cannot(make):
    model, (x, y) = make(), data()
    model[2].register_full_backward_hook(lambda mod, gi, go: (gi[0] * 2,))
    with pytest.raises(ValueError, match="backward hooks .* mode='auto'"):
        fd.HessianOperator(model, LOSS, (x, y), mode="forward-over-reverse")
    with pytest.raises(ValueError, match="backward hooks .* the GGN"):
        fd.GGNOperator(model, LOSS, (x, y))
    op = fd.HessianOperator(model, LOSS, (x, y))
    op.recompute = True  # as when the graphs do not fit in memory: autograd per product
    torch.testing.assert_close(op.to_dense(), double_backward(model, x, y), rtol=1e-10, atol=1e-12)


def test_a_gradient_hook_on_a_parameter_is_refused(make):
    model, (x, y) = make(), data()
    model[0].weight.register_hook(lambda g: 2 * g)
    with pytest.raises(ValueError, match=r"parameters \['(0|l1).weight'\] have gradient hooks"):
        fd.HessianOperator(model, LOSS, (x, y))


def test_a_custom_autograd_function_falls_back_to_autograd():
    class Square(torch.autograd.Function):  # no setup_context: torch.func refuses it
        @staticmethod
        def forward(ctx, t):
            ctx.save_for_backward(t)
            return t * t

        @staticmethod
        def backward(ctx, g):
            (t,) = ctx.saved_tensors
            return 2 * t * g

    class Custom(Net):
        def forward(self, x):
            return self.l2(Square.apply(self.l1(x)))

    torch.manual_seed(0)
    model, (x, y) = Custom(), data()
    op = fd.HessianOperator(model, LOSS, (x, y))
    op.recompute = True
    torch.testing.assert_close(op.to_dense(), double_backward(model, x, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_takes_the_generic_path(make, dtype):
    model, (x, y) = make(), data()
    model = model.to(dtype)
    op = fd.HessianOperator(model, LOSS, (x.to(dtype), y), check_deterministic=False)
    assert not op.fused and (isinstance(model, Net) or "float32 and float64" in op.fused_reason)
    dense = op.to_dense().double()
    ref = double_backward(model.to(torch.float64), x, y)
    assert float((dense - ref).norm() / ref.norm()) < 0.05


def test_losses_and_inputs_that_are_not_finite_scalars_are_named():
    model, (x, y) = own_module(), data()
    for reduction in ("mean", None):  # None: the reduction is found by splitting the batch
        with pytest.raises(ValueError, match=r"loss_fn returned \(20,\), not a scalar"):
            fd.HessianOperator(model, lambda z, t: (z - 0).sum(1), (x, y), reduction=reduction)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"loss of the first batch is nan: 1 data tensor\(s\) hold NaN/Inf"):
        fd.HessianOperator(model, LOSS, (bad, y))
    model.l1.weight.data[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"parameters \['l1.weight'\] hold NaN/Inf"):
        fd.HessianOperator(model, LOSS, (x, y))
