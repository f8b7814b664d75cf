"""Gauss–Newton kernels (per-sample core, streamed assembly): every backend against definitions."""

from __future__ import annotations

import pytest
import torch
from conftest import backends_for

from fastdnc.kernels import dispatch
from fastdnc.kernels import reference as ref

# (N, K, p, q). The last two span several tiles of the Triton kernels' interpreter config, with
# ragged edges: p = 75 is 3 blocks of 32, K = 17 pads to 32 roots, N = 37 is 3 sample tiles of 16,
# q = 20 is 2 row tiles of 16 and P·Q = 80 is 3 column tiles of 32 (test_tiles_are_exceeded).
SHAPES = [(1, 1, 1, 1), (7, 3, 5, 4), (20, 10, 9, 6), (33, 2, 17, 3), (5, 17, 75, 2), (37, 3, 4, 20)]


def operands(n, kk, p, q, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, kk, p, generator=g, dtype=torch.float64),
        torch.randn(q, n, generator=g, dtype=torch.float64),
        torch.randn(19, n, p, generator=g, dtype=torch.float64),  # 19 vectors: 2 blocks of 16
    )


def core_by_definition(roots, u):
    out = torch.empty_like(u)
    for j in range(u.shape[0]):
        for i in range(u.shape[1]):
            b = roots[i].T  # B_i, p × K
            out[j, i] = b @ (b.T @ u[j, i])
    return out


def assembly_by_definition(x, roots, scale):
    terms = [torch.kron(roots[i].T @ roots[i], torch.outer(x[:, i], x[:, i])) for i in range(x.shape[1])]
    return scale * sum(terms)


@pytest.mark.parametrize("backend", backends_for("gn_sample_core"))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sample_core(backend, shape):
    roots, _, u = operands(*shape)
    expected = core_by_definition(roots, u)
    out = dispatch.gn_sample_core(roots, u, backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    exact = expected
    err32 = (dispatch.gn_sample_core(roots.float(), u.float(), backend=backend).double() - exact).abs().max()
    torch_err32 = (ref.gn_sample_core(roots.float(), u.float()).double() - exact).abs().max()
    assert err32 <= 2 * torch_err32 + 8 * torch.finfo(torch.float32).eps * float(exact.abs().max())


@pytest.mark.parametrize("backend", backends_for("gn_assemble"))
@pytest.mark.parametrize("shape", SHAPES[:-2] + SHAPES[-1:], ids=str)  # SHAPES[-2] crosses the core's tiles
def test_assembly(backend, shape):
    roots, x, _ = operands(*shape)
    expected = assembly_by_definition(x, roots, 0.3)
    out = dispatch.gn_assemble(x, roots, 0.3, backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    err32 = (dispatch.gn_assemble(x.float(), roots.float(), 0.3, backend=backend).double() - expected).abs().max()
    torch_err32 = (ref.gn_assemble(x.float(), roots.float(), 0.3).double() - expected).abs().max()
    assert err32 <= 2 * torch_err32 + 8 * torch.finfo(torch.float32).eps * float(expected.abs().max())


def test_assembly_chunking_is_exact():
    roots, x, _ = operands(50, 4, 3, 5)
    torch.testing.assert_close(ref.gn_assemble(x, roots, 1.0, chunk=7), assembly_by_definition(x, roots, 1.0))


def test_tiles_are_exceeded():
    """The interpreter's configs are small enough that SHAPES cross tile edges in every dimension."""
    pytest.importorskip("triton")
    from fastdnc.kernels import triton_kernels as tk

    core, asm = tk.CORE_TILES[0][0], tk.ASSEMBLY_TILES[0][0]
    n, kk, p, _ = SHAPES[-2]
    assert p > 2 * core["BP"] and p % core["BP"] and 16 < operands(*SHAPES[-2])[2].shape[0] < 32 and kk > 16
    n, _, p, q = SHAPES[-1]
    assert n > 2 * asm["BK"] and n % asm["BK"] and q > asm["BM"] and q % asm["BM"] and p * q > 2 * asm["BN"]


def test_triton_core_routes_more_than_256_roots_away():
    pytest.importorskip("triton")
    if "triton" not in backends_for("gn_sample_core"):
        pytest.skip("triton cannot run here")
    with pytest.raises(dispatch.BackendUnavailable, match="K ≤ 256 .* use backend='torch'"):
        dispatch.gn_sample_core(torch.zeros(2, 257, 3), torch.zeros(1, 2, 3), backend="triton")
    assert dispatch.gn_sample_core(torch.ones(2, 257, 3), torch.ones(1, 2, 3)).shape == (1, 2, 3)  # auto: fine


MISMATCHES = [  # (kernel, arguments, error, message): every backend refuses them alike
    ("gn_sample_core", (torch.zeros(4, 2, 3, dtype=torch.float32), torch.zeros(1, 4, 3)), TypeError, "u has dtype"),
    ("gn_sample_core", (torch.zeros(4, 2, 3), torch.zeros(1, 5, 3)), ValueError, r"u must have shape \(·, 4, 3\)"),
    ("gn_sample_core", (torch.zeros(4, 2), torch.zeros(1, 4, 3)), ValueError, "roots must have 3 dimensions"),
    ("gn_assemble", (torch.zeros(3, 4), torch.zeros(4, 2, 3, dtype=torch.float32), 1.0), TypeError, "roots has dtype"),
    ("gn_assemble", (torch.zeros(3, 4), torch.zeros(5, 2, 3), 1.0), ValueError, r"roots must have shape \(4, ·, ·\)"),
    ("gn_gram", (torch.zeros(4, 2, 3), torch.zeros(4, 4), 1.0, torch.zeros(8, 7)), ValueError, "out must have"),
    ("gn_gram", (torch.zeros(4, 2, 3), torch.zeros(4, 4).float(), 1.0, torch.zeros(8, 8)), TypeError, "input_gram"),
]


@pytest.mark.parametrize("backend", backends_for("gn_gram"))
@pytest.mark.parametrize(("kernel", "args", "error", "message"), MISMATCHES, ids=lambda x: str(x)[:40])
def test_mismatched_operands_raise_on_every_backend(backend, kernel, args, error, message):
    with pytest.raises(error, match=message):
        getattr(dispatch, kernel)(*args, backend=backend)


def test_cpp_bindings_refuse_other_dtypes_and_strides():
    """The last line of defence: the pybind11 arrays are .noconvert(), so a float32 array given to a
    float64 kernel, or a non-contiguous one, raises instead of being copied and converted."""
    from fastdnc.kernels import cpp

    assert cpp.available(), f"the C++ extension is always built by setup.py: {cpp.IMPORT_ERROR}"
    import numpy as np

    roots, u = np.zeros((4, 2, 3)), np.zeros((1, 4, 3))
    out = np.zeros_like(u)
    cpp._C.gn_sample_core_f64(roots, u, out)  # the matching call works
    with pytest.raises(TypeError, match="incompatible function arguments"):
        cpp._C.gn_sample_core_f64(roots.astype(np.float32), u, out)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        cpp._C.gn_sample_core_f64(np.zeros((3, 2, 4)).transpose(2, 1, 0), u, out)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        cpp._C.gn_gram_f32(roots.astype(np.float32), np.zeros((4, 4)), np.zeros((8, 8), np.float32), 1.0)
    with pytest.raises(ValueError, match="u must have shape"):
        cpp._C.gn_sample_core_f64(roots, np.zeros((1, 5, 3)), np.zeros((1, 5, 3)))
