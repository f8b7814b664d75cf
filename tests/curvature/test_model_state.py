"""What can change a module's computation is found (hooks of every kind, parametrisations, patched
forwards), and a snapshot sees every change of a parameter or buffer, ``.data`` edits included."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, prune

from fastdnc.curvature.model_state import (
    BACKWARD_HOOKS,
    FORWARD_HOOKS,
    ModelSnapshot,
    foreign_forward,
    hooks,
    parametrized,
    weight_norm_parameters,
)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))


HOOKS = {
    "forward": lambda m: m[0].register_forward_hook(lambda mod, i, o: o),
    "forward with kwargs": lambda m: m[0].register_forward_hook(lambda mod, a, k, o: o, with_kwargs=True),
    "forward pre": lambda m: m[2].register_forward_pre_hook(lambda mod, i: None),
    "backward": lambda m: m[2].register_full_backward_hook(lambda mod, gi, go: None),
    "backward pre": lambda m: m[0].register_full_backward_pre_hook(lambda mod, go: None),
    "global forward": lambda m: nn.modules.module.register_module_forward_hook(lambda mod, i, o: None),
    "global forward pre": lambda m: nn.modules.module.register_module_forward_pre_hook(lambda mod, i: None),
    "global backward": lambda m: nn.modules.module.register_module_full_backward_hook(lambda mod, gi, go: None),
    "gradient hook": lambda m: m[0].weight.register_hook(lambda g: g),
    "pruning": lambda m: prune.random_unstructured(m[0], "weight", 0.5) and None,
}


@pytest.mark.parametrize("kind", list(HOOKS))
def test_every_kind_of_hook_is_found_and_the_snapshot_changes(kind):
    model = mlp()
    snap = ModelSnapshot(model)
    assert hooks(model) == [] and snap.matches(model)
    handle = HOOKS[kind](model)
    try:
        found = hooks(model)
        assert len(found) == 1, found
        backward = kind.startswith(("backward", "global backward", "gradient"))
        assert bool(hooks(model, BACKWARD_HOOKS)) == backward
        assert bool(hooks(model, FORWARD_HOOKS)) == (not backward)
        assert not snap.matches(model)
    finally:
        if handle is not None:
            handle.remove()


def test_parametrisations_and_weight_norm_are_named():
    model = mlp()
    parametrizations.orthogonal(model[2])
    assert parametrized(model) == ["2"] and weight_norm_parameters(model) == []
    model = mlp()
    parametrizations.weight_norm(model[0])
    assert weight_norm_parameters(model) == [
        "0.parametrizations.weight.original0",
        "0.parametrizations.weight.original1",
    ]
    model = mlp()
    with pytest.warns(FutureWarning):
        nn.utils.weight_norm(model[2])
    assert weight_norm_parameters(model) == ["2.weight_g", "2.weight_v"]


def test_pytorch_gets_the_second_derivative_of_weight_norm_wrong():
    """Why the operators refuse weight_norm: autograd's Hessian of torch._weight_norm is not even
    symmetric, while the same function written out is symmetric and agrees with finite differences."""
    g = torch.Generator().manual_seed(0)
    v, s, c = (torch.randn(shape, generator=g, dtype=torch.float64) for shape in ((4, 3), (4, 1), (4, 3)))

    def dense(fn):
        h = torch.autograd.functional.hessian(fn, (v, s))
        return torch.cat(
            [torch.cat([h[i][j].reshape(h[i][j].shape[:2].numel(), -1) for j in range(2)], 1) for i in range(2)]
        )

    library = dense(lambda v, s: (torch._weight_norm(v, s, 0) ** 3 * c).sum())
    written = dense(lambda v, s: ((v * s / v.norm(dim=1, keepdim=True)) ** 3 * c).sum())
    assert (library - library.T).norm() > 0.1 * library.norm()
    assert (written - written.T).norm() < 1e-14 * written.norm()


def test_patched_forwards_are_found(monkeypatch):
    model = mlp()
    assert all(foreign_forward(m) is None for m in model.modules())
    model[0].forward = lambda x: x
    assert "instance attribute" in foreign_forward(model[0])
    monkeypatch.setattr(nn.ReLU, "forward", lambda self, x: x.clamp(min=0))
    assert "ReLU.forward is not torch's own" in foreign_forward(model[1])

    class Mine(nn.Linear):
        pass

    assert foreign_forward(Mine(2, 2)) is None  # an inherited forward is still torch's own


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m[0].weight.data.mul_(1.7),  # no version bump
        lambda m: setattr(m[0].weight, "data", m[0].weight.data.clone() * 2),
        lambda m: m[2].bias.data.__setitem__(0, m[2].bias.data[0] + 1e-12),
        lambda m: m.train(False),
        lambda m: setattr(m[0], "forward", lambda x: x),
    ],
    ids=["data-mul", "data-assign", "one-entry", "mode", "instance-forward"],
)
def test_the_snapshot_sees_every_change(change):
    model = mlp()
    snap = ModelSnapshot(model)
    change(model)
    assert not snap.matches(model)


def test_the_snapshot_sees_buffers_and_data_and_treats_nan_bits_as_equal():
    model = nn.BatchNorm1d(3).eval()
    x = torch.randn(5, 3)
    snap = ModelSnapshot(model, [x])
    assert snap.matches(model, [x])
    model.running_mean.data.add_(1.0)
    assert not snap.matches(model, [x])
    snap = ModelSnapshot(model, [x])
    x.mul_(2)  # an in-place change of the data bumps its version
    assert not snap.matches(model, [x])
    model.weight.data[0] = float("nan")
    snap = ModelSnapshot(model, [x])
    assert snap.matches(model, [x])  # NaN compares equal to the same NaN: no endless rebuilds
