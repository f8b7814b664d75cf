"""fd.hessian / fd.ggn: exact against the dense autograd oracles for every model kind."""

from __future__ import annotations

import pytest
import torch
from conftest import build
from hypothesis import given, settings
from hypothesis import strategies as st

import fastdnc as fd
from fastdnc.curvature import oracles as R


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_every_model_kind(model_case, decay, kind):
    m = build(model_case)
    for inc in [False, True] if m.features_trainable else [False]:
        op = getattr(fd, kind)(m, include_features=inc, decay=decay)
        dense = (R.dense_hessian if kind == "hessian" else R.dense_ggn)(m, include_features=inc, decay=decay)
        v = torch.randn(op.size, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        assert rel(op @ v, dense @ v) <= 1e-10
        assert rel(op @ v[:, 1], dense @ v[:, 1]) <= 1e-10
        assert rel(op.to_dense(), dense) <= 1e-10


@pytest.mark.parametrize("inc", [False, True])
def test_structured_and_rop_paths_agree(inc):
    m = fd.DeepUFM(4, 3, 7, 4, seed=3)
    fast, rop = fd.hessian(m, inc, structured=True), fd.hessian(m, inc, structured=False)
    assert type(fast).__name__ == "LinearMSEHessian" and type(rop).__name__ == "LayeredHessian"
    v = torch.randn(fast.size, 3, dtype=torch.float64)
    assert rel(fast @ v, rop @ v) <= 1e-12
    with pytest.raises(ValueError, match="structured path needs a linear MSE"):
        fd.hessian(fd.DeepUFM(3, 2, 4, 2, activation="relu"), structured=True)


@settings(max_examples=30, deadline=None)
@given(
    K=st.integers(2, 5),
    extra=st.integers(0, 8),
    n=st.integers(1, 5),
    L=st.integers(1, 5),
    act=st.sampled_from(["linear", "relu"]),
    loss=st.sampled_from(["mse", "ce"]),
    inc=st.booleans(),
    decay=st.booleans(),
    ggn=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_random_shapes(K, extra, n, L, act, loss, inc, decay, ggn, seed):
    m = fd.DeepUFM(K, n, K + extra, L, activation=act, loss=loss, weight_decay=1e-2, seed=seed)
    op = (fd.ggn if ggn else fd.hessian)(m, include_features=inc, decay=decay)
    dense = (R.dense_ggn if ggn else R.dense_hessian)(m, include_features=inc, decay=decay)
    v = torch.randn(op.size, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert rel(op @ v, dense @ v) <= 1e-10


def test_blocks_and_errors():
    m = fd.DeepUFM(3, 2, 4, 2)
    H = fd.hessian(m, include_features=True)
    blocks = [torch.randn(s, dtype=torch.float64) for s in H.block_shapes]
    out = H @ blocks
    flat = H @ torch.cat([b.reshape(-1) for b in blocks])
    torch.testing.assert_close(torch.cat([o.reshape(-1) for o in out]), flat)
    assert {"S=H1H1ᵀ/N", "MB_1ᵀ", "A_1"} <= set(H.cache_info())
    x = torch.randn(5, 4, 3)
    head = fd.MLPHead(x.reshape(5, 12)[:, :12], torch.arange(12) % 3, 4, 2)
    with pytest.raises(ValueError, match="include_features=True needs trainable features"):
        fd.hessian(head, include_features=True)
    with pytest.raises(ValueError, match=r"does not fit an operator of size"):
        H @ torch.zeros(3, dtype=torch.float64)


def test_full_hessian_eigenvalues_match_dense():
    m = fd.DeepUFM(3, 2, 4, 3, activation="relu", loss="ce", seed=1)
    H = fd.hessian(m, include_features=True)
    torch.testing.assert_close(H.eigvalsh(), torch.linalg.eigvalsh(R.dense_hessian(m, True)), rtol=1e-10, atol=1e-12)
