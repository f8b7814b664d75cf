"""The sample-space Gram kernel (every backend) against its definition, on multi-tile and ragged
shapes, float64 tight and float32 within 2× torch's own error."""

from __future__ import annotations

import pytest
import torch
from conftest import backends_for

from fastdnc.kernels import dispatch
from fastdnc.kernels import reference as ref

SHAPES = [(1, 1, 1), (7, 3, 5), (33, 2, 17), (40, 3, 70)]  # (N, K, p): (40, 3) gives 120 rows, 2+ tiles


def by_definition(roots: torch.Tensor, gram: torch.Tensor, scale: float) -> torch.Tensor:
    n, k, _ = roots.shape
    out = torch.empty(n * k, n * k, dtype=roots.dtype)
    for i in range(n):
        for j in range(n):
            out[i * k : (i + 1) * k, j * k : (j + 1) * k] = scale * (roots[i] @ roots[j].T) * gram[i, j]
    return out


def operands(n, k, p, dtype=torch.float64):
    g = torch.Generator().manual_seed(n * 100 + k)
    roots = torch.randn(n, k, p, generator=g, dtype=torch.float64)
    x = torch.randn(5, n, generator=g, dtype=torch.float64)
    start = torch.randn(n * k, n * k, generator=g, dtype=torch.float64)
    return roots.to(dtype), (x.T @ x).to(dtype), (start + start.T).to(dtype)


@pytest.mark.parametrize("backend", backends_for("gn_gram"))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gn_gram_accumulates_the_definition(backend, shape):
    roots, gram, start = operands(*shape)
    expected = start + by_definition(roots, gram, 0.7)
    out = dispatch.gn_gram(roots, gram, 0.7, start.clone(), backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", backends_for("gn_gram", dtype=torch.float32))
def test_gn_gram_float32_error_is_at_most_twice_torchs(backend):
    roots, gram, start = operands(40, 3, 70)
    expected = start + by_definition(roots, gram, 0.7)
    args = (roots.float(), gram.float(), 0.7)
    ours = (dispatch.gn_gram(*args, start.float(), backend=backend).double() - expected).abs().max()
    torchs = (ref.gn_gram(*args, start.float()).double() - expected).abs().max()
    assert ours <= 2 * torchs + 8 * torch.finfo(torch.float32).eps * float(expected.abs().max())


def test_the_cpp_binding_refuses_mismatched_shapes():
    from fastdnc.kernels import cpp

    assert cpp.available(), f"the C++ extension is always built by setup.py: {cpp.IMPORT_ERROR}"
    roots, gram, start = operands(7, 3, 5)
    with pytest.raises(ValueError, match="input_gram must have shape"):
        cpp._C.gn_gram_f64(roots.numpy(), gram[:6, :6].contiguous().numpy(), start.numpy(), 1.0)
    with pytest.raises(ValueError, match="out must have shape"):
        cpp._C.gn_gram_f64(roots.numpy(), gram.numpy(), start[:20, :20].contiguous().numpy(), 1.0)
    with pytest.raises(ValueError, match="contiguous out"):
        cpp.gn_gram(roots, gram, 1.0, start.T)
