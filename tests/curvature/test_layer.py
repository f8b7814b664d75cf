"""layer_hessian / feature_hessian: exact against the autograd oracles for every model kind."""

from __future__ import annotations

import pytest
import torch
from conftest import backends_for, build
from hypothesis import given, settings
from hypothesis import strategies as st

import fastdnc as fd
from fastdnc.curvature import oracles as R


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def check_operator(op, dense: torch.Tensor, tol: float = 1e-10, seed: int = 0) -> None:
    v = torch.randn(op.size, 3, generator=torch.Generator().manual_seed(seed), dtype=dense.dtype)
    assert rel(op @ v, dense @ v) <= tol
    assert rel(op @ v[:, 0], dense @ v[:, 0]) <= tol
    assert rel(op.to_dense(), dense) <= tol
    assert rel(op.diagonal(), torch.diagonal(dense)) <= tol
    assert abs(float(op.trace() - torch.trace(dense))) <= tol * float(dense.abs().sum())


BACKENDS = backends_for("gn_sample_core")


@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("product", ["jacobian", "rop"])
def test_every_layer_of_every_model(model_case, decay, backend, product):
    m = build(model_case)
    for layer in range(1, m.depth + 1):
        H = fd.layer_hessian(m, layer, decay=decay, backend=backend, product=product)
        check_operator(H, R.dense_layer_hessian(m, layer, decay=decay))
    if m.features_trainable:
        F = fd.feature_hessian(m, decay=decay, backend=backend, product=product)
        check_operator(F, R.dense_feature_hessian(m, decay=decay))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_products_within_twice_torch_error(backend):
    m64 = fd.DeepUFM(4, 5, 9, 3, activation="relu", loss="ce", seed=5)
    m32 = fd.DeepUFM(4, 5, 9, 3, activation="relu", loss="ce", seed=5, dtype=torch.float32)
    v = torch.randn(81, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = R.dense_layer_hessian(m64, 2) @ v
    ours = fd.layer_hessian(m32, 2, backend=backend) @ v.float()
    torch_err = (R.dense_layer_hessian(m32, 2) @ v.float()).double() - exact
    scale = float(exact.abs().max())
    assert float((ours.double() - exact).abs().max()) <= 2 * float(torch_err.abs().max()) + 4e-7 * scale


def test_operator_kind_follows_the_model():
    assert isinstance(fd.layer_hessian(fd.DeepUFM(3, 2, 4, 3), 2), fd.KroneckerOperator)
    for act, loss in (("linear", "ce"), ("relu", "mse"), ("relu", "ce")):
        assert isinstance(fd.layer_hessian(fd.DeepUFM(3, 2, 4, 3, activation=act, loss=loss), 2), fd.BatchedGaussNewton)


@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(2, 6),
    extra=st.integers(0, 14),
    n=st.integers(1, 6),
    L=st.integers(1, 5),
    act=st.sampled_from(["linear", "relu"]),
    loss=st.sampled_from(["mse", "ce"]),
    decay=st.booleans(),
    seed=st.integers(0, 10**6),
    data=st.data(),
)
def test_random_shapes(K, extra, n, L, act, loss, decay, seed, data):
    d = K + extra
    m = fd.DeepUFM(K, n, d, L, activation=act, loss=loss, weight_decay=2e-2, seed=seed)
    layer = data.draw(st.integers(0, L), label="layer (0 = H_1)")
    if layer == 0:
        op, dense = fd.feature_hessian(m, decay=decay), R.dense_feature_hessian(m, decay=decay)
    else:
        op, dense = fd.layer_hessian(m, layer, decay=decay), R.dense_layer_hessian(m, layer, decay=decay)
    v = torch.randn(op.size, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ref = dense @ v
    if float(ref.norm()) > 0:
        assert rel(op @ v, ref) <= 1e-10
    assert rel(op.to_dense(), dense) <= 1e-10 or float(dense.norm()) == 0


@pytest.mark.parametrize("act, loss", [("linear", "mse"), ("linear", "ce"), ("relu", "mse"), ("relu", "ce")])
def test_exact_eigh_matches_dense(act, loss):
    m = fd.DeepUFM(3, 3, 6, 3, activation=act, loss=loss, weight_decay=1e-2, seed=2)
    for layer in (1, 2, 3):
        H = fd.layer_hessian(m, layer, decay=True)
        dense = R.dense_layer_hessian(m, layer, decay=True)
        evals, evecs = H.eigh()
        ref = torch.linalg.eigvalsh(dense)
        assert float((evals - ref).abs().max()) <= 1e-10 * float(ref.abs().max())
        top = evecs.top(3) if isinstance(H, fd.KroneckerOperator) else evecs[:, -3:].flip(1)
        for j in range(3):
            v = top[:, j]
            torch.testing.assert_close(dense @ v, evals[-1 - j] * v, rtol=0, atol=1e-10 * float(ref.abs().max()))


def test_parameter_shaped_products_and_cache_info():
    m = fd.DeepUFM(3, 2, 5, 3, activation="relu")
    H = fd.layer_hessian(m, 2)
    x = torch.randn(5, 5, dtype=torch.float64)
    torch.testing.assert_close((H @ x).reshape(-1), H @ x.reshape(-1))
    xs = torch.randn(5, 5, 4, dtype=torch.float64)
    assert (H @ xs).shape == (5, 5, 4)
    assert (H @ [x])[0].shape == (5, 5)
    info = H.cache_info()
    assert "inputs" in info and "upstream0.mask" in info
    H.diagonal()
    assert "roots" in H.cache_info()
    K = fd.layer_hessian(fd.DeepUFM(3, 2, 5, 3), 2)
    K.eigh()
    assert {"output_factor.root", "input_factor.root", "output_factor.eigenvectors"} <= set(K.cache_info())


def test_bad_inputs_are_named():
    m = fd.DeepUFM(3, 2, 4, 2)
    with pytest.raises(ValueError, match=r"layer must be an int in 1..2"):
        fd.layer_hessian(m, 0)
    with pytest.raises(ValueError, match=r"layer must be an int in 1..2"):
        fd.layer_hessian(m, 3)
    H = fd.layer_hessian(m, 1)
    with pytest.raises(ValueError, match=r"does not fit an operator of size 16"):
        H @ torch.zeros(15, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype torch.float32"):
        H @ torch.zeros(16, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"block 0 has shape"):
        H @ [torch.zeros(3, 3, dtype=torch.float64)]


class _ReluDelta(torch.autograd.Function):
    """ReLU with σ′(0) = δ (the backward is differentiable, so double backward gives the Hessian)."""

    @staticmethod
    def forward(ctx, x, delta):
        ctx.save_for_backward(x)
        ctx.delta = delta
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ((x > 0).to(g.dtype) + ctx.delta * (x == 0).to(g.dtype)), None


@pytest.mark.parametrize("delta", [0.0, 0.3, 1.0])
def test_relu_prime_at_zero_matches_autograd_at_exact_zeros(delta):
    m = fd.theory.optimum_model(3, 2, 5, 3, 1e-2, activation="relu")  # pre-activations exactly 0 off-class
    ws = [w.detach() for w in m.weights]
    h1 = m.features.detach()
    for layer in range(1, 4):

        def fit(w):
            ws_ = ws[: layer - 1] + [w] + ws[layer:]
            h = ws_[0] @ h1
            for wl in ws_[1:]:
                h = wl @ _ReluDelta.apply(h, delta)
            return 0.5 * (h - m.targets).square().sum() / m.num_samples

        w = ws[layer - 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fit(w), w, create_graph=True)
        dense = torch.stack(
            [torch.autograd.grad(g.reshape(-1)[i], w, retain_graph=True)[0].reshape(-1) for i in range(w.numel())]
        )
        got = fd.layer_hessian(m, layer, relu_prime_at_zero=delta).to_dense()
        torch.testing.assert_close(got, dense, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="relu_prime_at_zero"):
        fd.layer_hessian(m, 1, relu_prime_at_zero=-0.5)


def test_mode_is_the_deprecated_former_name_of_product():
    m = fd.DeepUFM(3, 2, 4, 2, activation="relu", dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="mode= is the former name of product="):
        old = fd.layer_hessian(m, 1, mode="rop")
    assert old.product == "rop" and fd.layer_hessian(m, 1, product="jacobian").product == "jacobian"
    torch.testing.assert_close(old.to_dense(), fd.layer_hessian(m, 1).to_dense(), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="product must be 'auto', 'jacobian' or 'rop'"):
        fd.layer_hessian(m, 1, product="dense")
