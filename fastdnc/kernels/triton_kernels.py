"""Triton kernels and their launchers (same signatures as :mod:`.reference`).

They run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how CI tests them,
on small shapes, against the torch reference). Matrix products use ``tl.dot`` with
``input_precision="ieee"`` so float32 results are not silently computed in TF32.

* :func:`two_sided_product`: two launches of a batched, broadcasting GEMM kernel (``_bmm``):
  T_j = O V_j, then Y_j = T_j I.
* :func:`gn_sample_core`: one program per (vector, sample): w = B_iᵀ u, out = B_i w, with the
  sample's K × p root streamed through registers in p-blocks.
* :func:`gn_assemble`: the fused Gauss–Newton block assembly. Each program owns a tile of one row
  slab; the operand :math:`S_a[i, (a', b')] = (B_iB_i^\\top)_{aa'}x_{ib'}` is generated on the fly
  from the roots and the inputs inside the k-loop, so it never exists in memory.
* :func:`sample_gram`: the sample-space Gram :math:`c\\,(RR^\\top)\\circ(G\\otimes\\mathbf 1)`
  accumulated in place, one triangle of tiles computed (each off-diagonal tile also writes its
  transpose), with 64-bit offsets.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _bmm(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    sab,
    sam,
    sak,
    sbb,
    sbk,
    sbn,
    scb,
    scm,
    scn,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """C[z] = A[z] @ B[z] for one (BM × BN) tile; a batch stride of 0 broadcasts an operand."""
    z = tl.program_id(2)
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32 if c_ptr.dtype.element_ty != tl.float64 else tl.float64)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        a = tl.load(
            a_ptr + z * sab + rm[:, None] * sam + rk[None, :] * sak,
            mask=(rm[:, None] < M) & (rk[None, :] < K),
            other=0.0,
        )
        b = tl.load(
            b_ptr + z * sbb + rk[:, None] * sbk + rn[None, :] * sbn,
            mask=(rk[:, None] < K) & (rn[None, :] < N),
            other=0.0,
        )
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(
        c_ptr + z * scb + rm[:, None] * scm + rn[None, :] * scn,
        acc.to(c_ptr.dtype.element_ty),
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )


def _tile(n: int) -> int:
    return max(16, min(64, triton.next_power_of_2(n)))


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(z|1, M, K) @ (z|1, K, N) → (z, M, N); 2-d operands broadcast over the batch."""
    a3 = a if a.ndim == 3 else a[None]
    b3 = b if b.ndim == 3 else b[None]
    z = max(a3.shape[0], b3.shape[0])
    m, k = a3.shape[1], a3.shape[2]
    n = b3.shape[2]
    c = torch.empty(z, m, n, dtype=a.dtype, device=a.device)
    bm, bn, bk = _tile(m), _tile(n), _tile(k)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn), z)
    _bmm[grid](
        a3,
        b3,
        c,
        m,
        n,
        k,
        a3.stride(0) if a3.shape[0] > 1 else 0,
        a3.stride(1),
        a3.stride(2),
        b3.stride(0) if b3.shape[0] > 1 else 0,
        b3.stride(1),
        b3.stride(2),
        c.stride(0),
        c.stride(1),
        c.stride(2),
        BM=bm,
        BN=bn,
        BK=bk,
    )
    return c


def two_sided_product(output_factor: torch.Tensor, v: torch.Tensor, input_factor: torch.Tensor) -> torch.Tensor:
    """Triton batched Y_j = O V_j I (see :func:`.reference.two_sided_product`)."""
    return _batched_matmul(_batched_matmul(output_factor, v), input_factor)


@triton.jit
def _gn_core(r_ptr, u_ptr, o_ptr, N, KK, P, BC: tl.constexpr, BP: tl.constexpr):
    """out[j, i] = B_i (B_iᵀ u[j, i]) for one (j, i); roots are (N, KK, P), u/out (k, N, P)."""
    i = tl.program_id(0)
    j = tl.program_id(1)
    rc = tl.arange(0, BC)
    acc_t = tl.float64 if o_ptr.dtype.element_ty == tl.float64 else tl.float32
    w = tl.zeros((BC,), dtype=acc_t)
    for p0 in range(0, P, BP):
        rp = p0 + tl.arange(0, BP)
        b = tl.load(
            r_ptr + i * KK * P + rc[:, None] * P + rp[None, :], mask=(rc[:, None] < KK) & (rp[None, :] < P), other=0.0
        )
        u = tl.load(u_ptr + (j * N + i) * P + rp, mask=rp < P, other=0.0)
        w += tl.sum(b * u[None, :], axis=1)
    for p0 in range(0, P, BP):
        rp = p0 + tl.arange(0, BP)
        b = tl.load(
            r_ptr + i * KK * P + rc[:, None] * P + rp[None, :], mask=(rc[:, None] < KK) & (rp[None, :] < P), other=0.0
        )
        out = tl.sum(b * w[:, None], axis=0)
        tl.store(o_ptr + (j * N + i) * P + rp, out.to(o_ptr.dtype.element_ty), mask=rp < P)


def gn_sample_core(roots: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Triton per-sample Gauss–Newton core (see :func:`.reference.gn_sample_core`)."""
    roots, u = roots.contiguous(), u.contiguous()
    n, kk, p = roots.shape
    out = torch.empty_like(u)
    _gn_core[(n, u.shape[0])](
        roots, u, out, n, kk, p, BC=triton.next_power_of_2(kk), BP=min(128, triton.next_power_of_2(p))
    )
    return out


@triton.jit
def _gn_assemble(x_ptr, r_ptr, o_ptr, Q, N, KK, P, scale, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """out[a*Q + b, col] = scale Σ_i x[b, i] (Σ_c R[i,c,a] R[i,c,a']) x[b', i], col = a'·Q + b'."""
    a = tl.program_id(0)
    rb = tl.program_id(1) * BM + tl.arange(0, BM)
    cols = tl.program_id(2) * BN + tl.arange(0, BN)
    a2 = cols // Q
    b2 = cols % Q
    size = P * Q
    acc_t = tl.float64 if o_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BM, BN), dtype=acc_t)
    for i0 in range(0, N, BK):
        ri = i0 + tl.arange(0, BK)
        xa = tl.load(x_ptr + rb[:, None] * N + ri[None, :], mask=(rb[:, None] < Q) & (ri[None, :] < N), other=0.0)
        g = tl.zeros((BK, BN), dtype=acc_t)
        for c in range(KK):
            ra = tl.load(r_ptr + ri * KK * P + c * P + a, mask=ri < N, other=0.0)
            rcol = tl.load(
                r_ptr + ri[:, None] * KK * P + c * P + a2[None, :],
                mask=(ri[:, None] < N) & (cols[None, :] < size),
                other=0.0,
            )
            g += ra[:, None] * rcol
        xb = tl.load(x_ptr + b2[None, :] * N + ri[:, None], mask=(ri[:, None] < N) & (cols[None, :] < size), other=0.0)
        acc += tl.dot(xa, (g * xb).to(xa.dtype), input_precision="ieee")
    tl.store(
        o_ptr + (a * Q + rb[:, None]) * size + cols[None, :],
        (acc * scale).to(o_ptr.dtype.element_ty),
        mask=(rb[:, None] < Q) & (cols[None, :] < size),
    )


def gn_assemble(inputs: torch.Tensor, roots: torch.Tensor, scale: float) -> torch.Tensor:
    """Triton fused Gauss–Newton block assembly (see :func:`.reference.gn_assemble`)."""
    inputs, roots = inputs.contiguous(), roots.contiguous()
    q, n = inputs.shape
    _, kk, p = roots.shape
    size = p * q
    out = torch.empty(size, size, dtype=inputs.dtype, device=inputs.device)
    bm, bn, bk = _tile(q), 64, 32
    grid = (p, triton.cdiv(q, bm), triton.cdiv(size, bn))
    _gn_assemble[grid](inputs, roots, out, q, n, kk, p, float(scale), BM=bm, BN=bn, BK=bk)
    return out


@triton.jit
def _sample_gram(r_ptr, g_ptr, o_ptr, M, P, N, KK, scale, BM: tl.constexpr, BP: tl.constexpr):
    """One (BM × BM) tile of out += c (R Rᵀ) ∘ (G ⊗ 1): tiles with j ≥ i only, and the tile (i, j)
    also writes its transpose to (j, i), so that one triangle of R Rᵀ is computed (64-bit offsets)."""
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    if tj < ti:
        return
    rm = (ti * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (tj * BM + tl.arange(0, BM)).to(tl.int64)
    acc_t = tl.float64 if o_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BM, BM), dtype=acc_t)
    for p0 in range(0, P, BP):
        rp = (p0 + tl.arange(0, BP)).to(tl.int64)
        a = tl.load(r_ptr + rm[:, None] * P + rp[None, :], mask=(rm[:, None] < M) & (rp[None, :] < P), other=0.0)
        b = tl.load(r_ptr + rn[:, None] * P + rp[None, :], mask=(rn[:, None] < M) & (rp[None, :] < P), other=0.0)
        acc += tl.dot(a, tl.trans(b), input_precision="ieee")
    inside = (rm[:, None] < M) & (rn[None, :] < M)
    g = tl.load(g_ptr + (rm // KK)[:, None] * N + (rn // KK)[None, :], mask=inside, other=0.0)
    tile = acc * g * scale
    here = o_ptr + rm[:, None] * M + rn[None, :]
    tl.store(here, tl.load(here, mask=inside, other=0.0) + tile.to(o_ptr.dtype.element_ty), mask=inside)
    if tj > ti:
        there = o_ptr + rn[None, :] * M + rm[:, None]
        tl.store(there, tl.load(there, mask=inside, other=0.0) + tile.to(o_ptr.dtype.element_ty), mask=inside)


def sample_gram(roots: torch.Tensor, input_gram: torch.Tensor, scale: float, out: torch.Tensor) -> torch.Tensor:
    """Triton sample-space Gram accumulation, one triangle (see :func:`.reference.sample_gram`)."""
    n, kk, p = roots.shape
    m = n * kk
    flat = roots.reshape(m, p).contiguous()
    g = input_gram.contiguous()
    if not out.is_contiguous():
        raise ValueError("sample_gram accumulates into a contiguous out")
    bm, bp = _tile(m), _tile(p)
    grid = (triton.cdiv(m, bm), triton.cdiv(m, bm))
    _sample_gram[grid](flat, g, out, m, p, n, kk, float(scale), BM=bm, BP=bp)
    return out
