"""Gauss–Newton kernels (per-sample core, streamed assembly): every backend against definitions."""

from __future__ import annotations

import pytest
import torch
from conftest import backends_for

from fastdnc.kernels import dispatch
from fastdnc.kernels import reference as ref

SHAPES = [(1, 1, 1, 1), (7, 3, 5, 4), (20, 10, 9, 6), (33, 2, 17, 3)]  # (N, K, p, q)


def operands(n, kk, p, q, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, kk, p, generator=g, dtype=torch.float64),
        torch.randn(q, n, generator=g, dtype=torch.float64),
        torch.randn(3, n, p, generator=g, dtype=torch.float64),
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
@pytest.mark.parametrize("shape", SHAPES, ids=str)
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
