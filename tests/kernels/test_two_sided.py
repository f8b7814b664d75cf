"""Batched two-sided product Y_j = O V_j I: every backend against the float64 reference."""

from __future__ import annotations

import pytest
import torch
from conftest import backends_for
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdnc.kernels import BackendUnavailable, backend_status, two_sided_product
from fastdnc.kernels import reference as ref

CPU_BACKENDS = backends_for("two_sided_product")
SHAPES = [(1, 1, 1), (1, 4, 64), (3, 5, 7), (2, 33, 17), (4, 64, 64), (1, 130, 9), (2, 9, 130)]


def operands(b, p, q, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(p, p, generator=g, dtype=torch.float64)
    i = torch.randn(q, q, generator=g, dtype=torch.float64)
    v = torch.randn(b, p, q, generator=g, dtype=torch.float64)
    return (o + o.T).to(dtype), v.to(dtype), (i + i.T).to(dtype)


def test_cpp_backend_is_built():
    assert "cpp" in CPU_BACKENDS, backend_status("cpp", torch.device("cpu"), torch.float64)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float64_matches_reference(backend, shape):
    o, v, i = operands(*shape)
    expected = torch.einsum("ab,jbc,cd->jad", o, v, i)
    out = two_sided_product(o, v, i, backend=backend)
    assert out.shape == v.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float32_error_within_twice_torch(backend, shape):
    """FlashAttention's rule: error ≤ 2 × torch's own float32 error, both against float64."""
    o, v, i = operands(*shape)
    exact = ref.two_sided_product(o, v, i)
    o32, v32, i32 = o.float(), v.float(), i.float()
    torch_err = (ref.two_sided_product(o32, v32, i32).double() - exact).abs().max()
    ours_err = (two_sided_product(o32, v32, i32, backend=backend).double() - exact).abs().max()
    floor = 4 * torch.finfo(torch.float32).eps * float(exact.abs().max())  # both may be ~exact
    assert ours_err <= 2 * torch_err + floor


def test_unbatched_input_and_matvec_meaning():
    """(O ⊗ I) vec(V) = vec(O V I) for symmetric I under the row-major vec."""
    o, v, i = operands(1, 3, 4)
    for backend in CPU_BACKENDS:
        out = two_sided_product(o, v[0], i, backend=backend)
        torch.testing.assert_close(out.reshape(-1), torch.kron(o, i) @ v[0].reshape(-1))


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), p=st.integers(1, 40), q=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_random_shapes_all_backends(b, p, q, seed):
    o, v, i = operands(b, p, q, seed=seed)
    expected = ref.two_sided_product(o, v, i)
    for backend in CPU_BACKENDS:
        torch.testing.assert_close(two_sided_product(o, v, i, backend=backend), expected, rtol=1e-11, atol=1e-11)


def test_non_contiguous_inputs():
    o, v, i = operands(3, 6, 5)
    vt = v.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    for backend in CPU_BACKENDS:
        torch.testing.assert_close(two_sided_product(o.T, vt, i.T, backend=backend), ref.two_sided_product(o, v, i))


def test_bad_inputs():
    o, v, i = operands(2, 3, 4)
    with pytest.raises(ValueError, match=r"output_factor must have shape \(3, 3\)"):
        two_sided_product(i, v, i)
    with pytest.raises(TypeError, match="input_factor has dtype torch.float32"):
        two_sided_product(o, v, i.float())
    with pytest.raises(ValueError, match=r"shape \(p, q\) or \(batch, p, q\)"):
        two_sided_product(o, v[None], i)
    with pytest.raises(BackendUnavailable, match="no cuda kernel for two_sided_product: it is two GEMMs"):
        two_sided_product(o, v, i, backend="cuda")
    with pytest.raises(BackendUnavailable, match="float32/float64"):
        two_sided_product(o.half(), v.half(), i.half(), backend="cpp")
    with pytest.raises(ValueError, match="unknown backend"):
        two_sided_product(o, v, i, backend="fortran")
