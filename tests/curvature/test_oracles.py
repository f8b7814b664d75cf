"""Autograd oracles: consistent with each other, with finite differences and with Theorem 1."""

from __future__ import annotations

import pytest
import torch
from conftest import build

import fastdnc as fd
from fastdnc.curvature import oracles as R


def _flat_grad(m, include_features, decay=True):
    lg = m.loss_and_gradients(decay=decay)
    names = [n for n, _ in m.trainable_blocks()]
    keep = [n for n, _ in m.parameter_blocks(include_features)]
    return torch.cat([g.reshape(-1) for n, g in zip(names, lg.gradients) if n in keep])


def _set_flat(m, theta, include_features):
    i = 0
    with torch.no_grad():
        for _, t in m.parameter_blocks(include_features):
            t.copy_(theta[i : i + t.numel()].reshape(t.shape))
            i += t.numel()


@pytest.mark.parametrize("decay", [True, False])
def test_dense_hessian_against_finite_differences(model_case, decay):
    """Central differences of the hand-written gradient: independent of autograd."""
    m = build(model_case)
    inc = m.features_trainable
    H = R.dense_hessian(m, include_features=inc, decay=decay)
    assert H.shape == (R.num_parameters(m, inc),) * 2
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-13)
    theta = torch.cat([t.detach().reshape(-1) for _, t in m.parameter_blocks(inc)])
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(0), dtype=theta.dtype)
    eps = 1e-5
    _set_flat(m, theta + eps * v, inc)
    gp = _flat_grad(m, inc, decay)
    _set_flat(m, theta - eps * v, inc)
    gm = _flat_grad(m, inc, decay)
    _set_flat(m, theta, inc)
    fd_hv = (gp - gm) / (2 * eps)
    hv = H @ v
    assert float((fd_hv - hv).norm() / hv.norm()) < 1e-7  # FD truncation error, not autograd's


def test_hvps_and_blocks_agree_with_the_dense_hessian(model_case):
    m = build(model_case)
    inc = m.features_trainable
    H = R.dense_hessian(m, include_features=inc)
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(1), dtype=H.dtype)
    scale = float((H @ v).norm())
    for hvp in (R.hvp_double_backward, R.hvp_jvp_grad):
        assert float((hvp(m, v, include_features=inc) - H @ v).norm()) <= 1e-12 * scale
    # layer blocks are the diagonal blocks; decay adds λ_l I
    offsets, i = {}, 0
    for name, t in m.parameter_blocks(inc):
        offsets[name] = (i, i + t.numel())
        i += t.numel()
    H_fit = R.dense_hessian(m, include_features=inc, decay=False)
    for l in range(1, m.depth + 1):
        a, b = offsets[f"W_{l}"]
        torch.testing.assert_close(R.dense_layer_hessian(m, l), H_fit[a:b, a:b], rtol=1e-12, atol=1e-14)
        lam = m.weight_decay[l - 1]
        torch.testing.assert_close(
            R.dense_layer_hessian(m, l, decay=True), H_fit[a:b, a:b] + lam * torch.eye(b - a), rtol=1e-12, atol=1e-14
        )
    if inc:
        a, b = offsets["H_1"]
        torch.testing.assert_close(R.dense_feature_hessian(m), H_fit[a:b, a:b], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(R.fit_gradient(m, inc), _flat_grad(m, inc, decay=False), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_linear_mse_layer_hessian_is_kronecker_row_major(layer):
    """Theorem 1 at a random point: Hess_l = (A_{l+1}ᵀA_{l+1}) ⊗ (H_l H_lᵀ / N), row-major vec."""
    m = fd.DeepUFM(3, 4, 5, 3, activation="linear", loss="mse", seed=7)
    ws = [w.detach() for w in m.weights]
    a = torch.eye(3, dtype=torch.float64)
    for w in ws[layer:][::-1]:
        a = a @ w
    h = m.layer_inputs()[layer - 1].detach()
    expected = torch.kron(a.T @ a, h @ h.T / m.num_samples)
    torch.testing.assert_close(R.dense_layer_hessian(m, layer), expected, rtol=1e-12, atol=1e-14)
    g = R.layer_fit_gradient(m, layer)
    torch.testing.assert_close(g, m.loss_and_gradients(decay=False).gradients[layer - 1].reshape(-1))


def test_oracle_input_errors():
    m = fd.DeepUFM(3, 2, 4, 2)
    with pytest.raises(ValueError, match=r"shape \(28,\)"):
        R.hvp_double_backward(m, torch.zeros(5))
    with pytest.raises(TypeError, match="dtype"):
        R.hvp_jvp_grad(m, torch.zeros(28, dtype=torch.float32))
    with pytest.raises(ValueError, match="layer must be in 1..2"):
        R.dense_layer_hessian(m, 3)


def test_the_old_module_name_is_a_deprecated_alias():
    import importlib
    import sys

    sys.modules.pop("fastdnc.curvature.reference", None)
    with pytest.warns(DeprecationWarning, match="renamed fastdnc.curvature.oracles"):
        old = importlib.import_module("fastdnc.curvature.reference")
    assert old.dense_hessian is R.dense_hessian
