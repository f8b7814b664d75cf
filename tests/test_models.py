"""DeepUFM / MLPHead: forward, loss and gradients against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MODEL_CASES, build, make_ufm
from hypothesis import given, settings
from hypothesis import strategies as st

import fastdnc as fd


def independent_loss(m, fit_only: bool = False) -> torch.Tensor:
    """The loss written out sample by sample, without the package's forward code."""
    ws = [w.detach() for w in m.weights]
    bs = None if m.biases is None else [b.detach() for b in m.biases]
    x = m.features.detach()
    total = 0.0
    for i in range(x.shape[1]):
        h = x[:, i]
        for l, w in enumerate(ws):
            if l > 0 and m.activation == "relu":
                h = torch.clamp(h, min=0)
            h = w @ h + (bs[l] if bs is not None else 0)
        y = int(m.labels[i])
        if m.loss_type == "mse":
            e = torch.zeros(m.num_classes)
            e[y] = 1
            total += 0.5 * float(((h - e) ** 2).sum())
        else:
            total += float(torch.logsumexp(h, 0) - h[y])
    fit = total / x.shape[1]
    if fit_only:
        return torch.tensor(fit)
    reg = sum(0.5 * lam * float((w**2).sum()) for lam, w in zip(m.weight_decay, ws))
    if m.features_trainable:
        reg += 0.5 * m.feature_decay * float((x**2).sum())
    return torch.tensor(fit + reg)


def test_forward_and_loss_match_independent(model_case):
    m = build(model_case)
    torch.testing.assert_close(m.fit_loss().detach(), independent_loss(m, fit_only=True), rtol=1e-12, atol=0)
    torch.testing.assert_close(m.loss().detach(), independent_loss(m), rtol=1e-12, atol=0)


def test_analytic_gradients_match_autograd(model_case):
    m = build(model_case)
    lg = m.loss_and_gradients()
    params = [t for _, t in m.trainable_blocks()]
    auto = torch.autograd.grad(m.loss(), params)
    assert len(lg.gradients) == len(auto)
    for name, a, b in zip([n for n, _ in m.trainable_blocks()], lg.gradients, auto):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=name)
    torch.testing.assert_close(lg.loss, m.loss().detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(lg.fit, m.fit_loss().detach(), rtol=1e-13, atol=0)


def test_fit_only_gradients(model_case):
    m = build(model_case)
    lg = m.loss_and_gradients(decay=False)
    params = [t for _, t in m.trainable_blocks()]
    auto = torch.autograd.grad(m.fit_loss(), params)
    for a, b in zip(lg.gradients, auto):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert float(lg.reg) == 0.0


@pytest.mark.parametrize("case", MODEL_CASES[:4], ids=lambda c: c["id"])
def test_minibatch_gradient_is_the_subset_loss_gradient(case):
    m = make_ufm(case)
    cols = torch.tensor([0, 2, m.num_samples - 1])
    lg = m.loss_and_gradients(columns=cols)
    params = [t for _, t in m.trainable_blocks()]
    ws = list(m.weights)
    out = fd.models.forward_states(ws, None, m.features[:, cols], m.activation).output
    loss = fd.models.fit_loss_of(out, m.targets[:, cols], m.labels[cols], m.loss_type) + m.reg_loss()
    for a, b in zip(lg.gradients, torch.autograd.grad(loss, params)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(
    K=st.integers(2, 5),
    n=st.integers(1, 4),
    extra=st.integers(0, 4),
    L=st.integers(1, 5),
    act=st.sampled_from(["linear", "relu"]),
    loss=st.sampled_from(["mse", "ce"]),
    seed=st.integers(0, 10**6),
)
def test_gradients_random_shapes(K, n, extra, L, act, loss, seed):
    m = fd.DeepUFM(K, n, K + extra, L, activation=act, loss=loss, weight_decay=3e-2, seed=seed)
    lg = m.loss_and_gradients()
    auto = torch.autograd.grad(m.loss(), [t for _, t in m.trainable_blocks()])
    for a, b in zip(lg.gradients, auto):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_shapes_labels_and_accessors():
    m = fd.DeepUFM(4, 3, 7, 3, activation="relu")
    assert m.features.shape == (7, 12)
    assert [tuple(w.shape) for w in m.weights] == [(7, 7), (7, 7), (4, 7)]
    assert m.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    st_ = m.states()
    assert len(st_.preactivations) == 4 and len(st_.inputs) == 3
    torch.testing.assert_close(st_.inputs[0], m.features)
    torch.testing.assert_close(st_.inputs[2], torch.relu(st_.preactivations[2]))
    torch.testing.assert_close(m.output(), st_.output)
    means = m.class_means(2)
    torch.testing.assert_close(means[:, 1], st_.inputs[1][:, 3:6].mean(dim=1))
    assert m.class_means(4).shape == (4, 4)
    assert [n for n, _ in m.parameter_blocks(True)] == ["W_1", "W_2", "W_3", "H_1"]


def test_initialisation_is_seeded_and_scaled():
    a, b, c = (fd.DeepUFM(4, 50, 64, 3, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.weights[0], b.weights[0]) and torch.equal(a.features, b.features)
    assert not torch.equal(a.weights[0], c.weights[0])
    std = float(torch.cat([w.detach().reshape(-1) for w in a.weights[:2]]).std())
    assert abs(std - 1 / math.sqrt(64)) < 0.01
    assert abs(float(a.features.detach().std()) - 1 / math.sqrt(64)) < 0.01


def test_float32_model():
    m = fd.DeepUFM(3, 2, 4, 2, dtype=torch.float32)
    assert m.loss().dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in m.loss_and_gradients().gradients)


def test_mlp_head_block_order_and_fixed_inputs():
    x = torch.randn(5, 8)
    m = fd.MLPHead(x, torch.arange(8) % 3, 4, 2, bias=True)
    assert [n for n, _ in m.trainable_blocks()] == ["W_1", "b_1", "W_2", "b_2"]
    assert not m.features_trainable
    with pytest.raises(ValueError, match="fixed input"):
        m.parameter_blocks(include_features=True)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_classes=5, n_per_class=2, width=4, depth=2), ValueError, "width d=4 must be >= num_classes K=5"),
        (dict(num_classes=3, n_per_class=2, width=4, depth=2, weight_decay=-1e-3), ValueError, "weight_decay"),
        (dict(num_classes=3, n_per_class=2, width=4, depth=2, feature_decay=float("nan")), ValueError, "feature_decay"),
        (dict(num_classes=3, n_per_class=2, width=4, depth=2, activation="tanh"), ValueError, "unknown activation"),
        (dict(num_classes=3, n_per_class=2, width=4, depth=2, loss="hinge"), ValueError, "unknown loss"),
        (dict(num_classes=3, n_per_class=2, width=4, depth=0), ValueError, "depth"),
        (dict(num_classes=1, n_per_class=2, width=4, depth=2), ValueError, "num_classes"),
        (dict(num_classes=3, n_per_class=2, width=4, depth=2, dtype=torch.float16), TypeError, "float32 or"),
        (
            dict(num_classes=3, n_per_class=2, width=4, depth=2, weight_decay=[1e-3, 2e-3]),
            ValueError,
            "feature_decay explicitly",
        ),
        (dict(num_classes=3, n_per_class=2, width=4, depth=2, weight_decay=[1e-3]), ValueError, "list of depth=2"),
    ],
)
def test_bad_ufm_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fd.DeepUFM(**kwargs)


def test_mixed_dtypes_and_nan_features_are_reported():
    m = fd.DeepUFM(3, 2, 4, 2)
    m.weights[1] = torch.nn.Parameter(m.weights[1].detach().float())
    with pytest.raises(TypeError, match="W_2 has dtype torch.float32 but W_1 has torch.float64"):
        m.check()
    m = fd.DeepUFM(3, 2, 4, 2)
    with torch.no_grad():
        m.features[0, 1] = float("nan")
    with pytest.raises(ValueError, match="H_1 contains 1 NaN"):
        m.check()
    with pytest.raises(ValueError, match="H_1 contains 1 NaN"):
        fd.train(m, 3)


@pytest.mark.parametrize(
    "x, y, kwargs, error, match",
    [
        (torch.randn(3, 5), torch.arange(4), {}, ValueError, "5 columns .* labels has 4"),
        (torch.randn(3, 4), torch.arange(4).double(), {}, TypeError, "integer"),
        (torch.randn(3, 4).float(), torch.arange(4), dict(dtype=torch.float64), TypeError, "mixed dtypes"),
        (torch.full((3, 4), float("nan")), torch.arange(4), {}, ValueError, "inputs contains 12 NaN"),
        (torch.randn(3, 4), torch.tensor([0, 1, 5, 1]), dict(num_classes=3), ValueError, "labels go up to 5"),
    ],
)
def test_bad_mlp_arguments(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        fd.MLPHead(x, y, 4, 2, **kwargs)
