"""Triton kernels and their launchers (same signatures as :mod:`.reference`).

They run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how CI tests them, on
multi-tile ragged shapes, against the torch reference). Every kernel:

* is autotuned over a small set of tile shapes, warps and pipeline stages (the interpreter, which
  cannot time anything, uses the first, smallest config);
* computes its offsets in 64 bits (an output of P·Q > 46k columns overflows 32-bit row offsets);
* multiplies with ``tl.dot`` in IEEE float32 unless the caller opted into TF32 the way torch does,
  ``torch.backends.cuda.matmul.allow_tf32 = True`` (then float32 products use TF32 tensor cores,
  as torch's own matmul does; float64 is never affected).

Kernels:

* :func:`two_sided_product`: two launches of a batched, broadcasting GEMM (``_bmm``, grouped
  program order so that consecutive programs share operand tiles in L2): T_j = O V_j, Y_j = T_j I.
  On GPU ``auto`` uses torch (cuBLAS) for this plain GEMM; the kernel is kept as the Triton
  baseline of the GPU benchmark.
* :func:`gn_sample_core`: one program per (sample, block of 16 vectors): W = U Bᵢ (a dot over p),
  then out = W Bᵢᵀ, so a sample's K × p root is read once per pass for 16 vectors instead of once
  per vector. K up to 256 (beyond: torch, with the reason).
* :func:`gn_assemble`: the fused Gauss–Newton block, one triangle. Program (a, row tile, column
  tile) owns columns (a′, b′) with a′ ≥ a only; the operand
  :math:`S_a[i, (a', b')] = (B_iB_i^\\top)_{aa'}x_{ib'}` is generated per k-tile of samples and
  reused by every row of the tile, then the tile is stored with its mirror image: half the flops of
  the full block, and S never exists in memory.
* :func:`gn_gram`: the sample-space Gram :math:`c\\,(RR^\\top)\\circ(G\\otimes\\mathbf 1)`
  accumulated in place, one triangle of tiles (each off-diagonal tile also writes its transpose).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .dispatch import BackendUnavailable

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
MAX_ROOTS = 256  # gn_sample_core keeps a (16 × K) block of projections in registers


#: (tiles, warps, stages) of the Gauss–Newton core and assembly kernels; the interpreter runs the first
CORE_TILES = [({"BP": 32}, 2, 2), ({"BP": 64}, 4, 2), ({"BP": 128}, 4, 3)]
ASSEMBLY_TILES = [
    ({"BM": 16, "BN": 32, "BK": 16}, 2, 2),
    ({"BM": 64, "BN": 64, "BK": 32}, 4, 2),
    ({"BM": 64, "BN": 128, "BK": 32}, 8, 2),
]


def _configs(shapes: list[tuple[dict, int, int]]) -> list[triton.Config]:
    """Autotuning configs (tile sizes, warps, stages); the interpreter gets the first only."""
    configs = [triton.Config(tiles, num_warps=warps, num_stages=stages) for tiles, warps, stages in shapes]
    return configs[:1] if INTERPRETED else configs


def _precision(t: torch.Tensor) -> str:
    """``tl.dot``'s input precision: TF32 only for float32 on a GPU when the caller opted in."""
    tf32 = t.dtype == torch.float32 and t.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


@triton.autotune(
    configs=_configs(
        [
            ({"BM": 32, "BN": 32, "BK": 16}, 2, 2),
            ({"BM": 64, "BN": 64, "BK": 32}, 4, 3),
            ({"BM": 128, "BN": 64, "BK": 32}, 4, 3),
            ({"BM": 64, "BN": 128, "BK": 32}, 4, 3),
            ({"BM": 128, "BN": 128, "BK": 32}, 8, 3),
        ]
    ),
    key=["M", "N", "K"],
)
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
    PREC: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr = 8,
):
    """C[z] = A[z] @ B[z] for one (BM × BN) tile; a batch stride of 0 broadcasts an operand. Tiles
    are visited in groups of GROUP_M row tiles so that neighbouring programs reuse B's columns."""
    pid = tl.program_id(0)
    z = tl.program_id(1).to(tl.int64)
    tiles_m, tiles_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    group = GROUP_M * tiles_n
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pm = first_m + (pid % group) % size_m
    pn = (pid % group) // size_m
    rm = (pm * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (pn * BN + tl.arange(0, BN)).to(tl.int64)
    acc = tl.zeros((BM, BN), dtype=tl.float64 if c_ptr.dtype.element_ty == tl.float64 else tl.float32)
    for k0 in range(0, K, BK):
        rk = (k0 + tl.arange(0, BK)).to(tl.int64)
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
        acc += tl.dot(a, b, input_precision=PREC)
    tl.store(
        c_ptr + z * scb + rm[:, None] * scm + rn[None, :] * scn,
        acc.to(c_ptr.dtype.element_ty),
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(z|1, M, K) @ (z|1, K, N) → (z, M, N); 2-d operands broadcast over the batch."""
    a3 = a if a.ndim == 3 else a[None]
    b3 = b if b.ndim == 3 else b[None]
    z = max(a3.shape[0], b3.shape[0])
    m, k = a3.shape[1], a3.shape[2]
    n = b3.shape[2]
    c = torch.empty(z, m, n, dtype=a.dtype, device=a.device)

    def grid(meta):
        return (triton.cdiv(m, meta["BM"]) * triton.cdiv(n, meta["BN"]), z)

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
        PREC=_precision(a),
    )
    return c


def two_sided_product(output_factor: torch.Tensor, v: torch.Tensor, input_factor: torch.Tensor) -> torch.Tensor:
    """Triton batched Y_j = O V_j I (see :func:`.reference.two_sided_product`)."""
    return _batched_matmul(_batched_matmul(output_factor, v), input_factor)


@triton.autotune(
    configs=_configs(CORE_TILES),
    key=["KK", "P"],
)
@triton.jit
def _gn_core(r_ptr, u_ptr, o_ptr, NV, N, KK, P, PREC: tl.constexpr, BC: tl.constexpr, BP: tl.constexpr):
    """out[j, i] = B_i (B_iᵀ u[j, i]) for sample i and 16 vectors j; roots (N, KK, P), u/out (NV, N, P).

    W (16 × K) = U (16 × P) · R_iᵀ, then out (16 × P) = W · R_i, R_i the sample's (K × P) root."""
    i = tl.program_id(0).to(tl.int64)
    rj = (tl.program_id(1) * 16 + tl.arange(0, 16)).to(tl.int64)
    rc = tl.arange(0, BC).to(tl.int64)
    acc_t = tl.float64 if o_ptr.dtype.element_ty == tl.float64 else tl.float32
    root = r_ptr + i * KK * P
    rows = (rj * N + i) * P
    w = tl.zeros((16, BC), dtype=acc_t)
    for p0 in range(0, P, BP):
        rp = (p0 + tl.arange(0, BP)).to(tl.int64)
        u = tl.load(u_ptr + rows[:, None] + rp[None, :], mask=(rj[:, None] < NV) & (rp[None, :] < P), other=0.0)
        r = tl.load(root + rc[:, None] * P + rp[None, :], mask=(rc[:, None] < KK) & (rp[None, :] < P), other=0.0)
        w += tl.dot(u, tl.trans(r), input_precision=PREC)
    w_in = w.to(o_ptr.dtype.element_ty)
    for p0 in range(0, P, BP):
        rp = (p0 + tl.arange(0, BP)).to(tl.int64)
        r = tl.load(root + rc[:, None] * P + rp[None, :], mask=(rc[:, None] < KK) & (rp[None, :] < P), other=0.0)
        out = tl.dot(w_in, r, input_precision=PREC)
        tl.store(
            o_ptr + rows[:, None] + rp[None, :],
            out.to(o_ptr.dtype.element_ty),
            mask=(rj[:, None] < NV) & (rp[None, :] < P),
        )


def gn_sample_core(roots: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Triton per-sample Gauss–Newton core (see :func:`.reference.gn_sample_core`)."""
    roots, u = roots.contiguous(), u.contiguous()
    n, kk, p = roots.shape
    if kk > MAX_ROOTS:
        raise BackendUnavailable(
            f"the Triton gn_sample_core holds K ≤ {MAX_ROOTS} projections per sample, got K = {kk}; use backend='torch'"
        )
    out = torch.empty_like(u)
    nv = u.shape[0]
    if nv and n:
        grid = (n, triton.cdiv(nv, 16))
        _gn_core[grid](roots, u, out, nv, n, kk, p, PREC=_precision(u), BC=max(16, triton.next_power_of_2(kk)))
    return out


@triton.autotune(
    configs=_configs(ASSEMBLY_TILES),
    key=["Q", "N", "KK", "P"],
)
@triton.jit
def _gn_assemble(
    x_ptr, r_ptr, o_ptr, Q, N, KK, P, scale, PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr
):
    """Tile of out[a*Q + b, col] = scale Σ_i x[b, i] (Σ_c R[i,c,a] R[i,c,a']) x[b', i], col = a'·Q + b',
    for the columns with a' ≥ a only; the tile is also written mirrored (columns with a' > a)."""
    a = tl.program_id(0).to(tl.int64)
    size = P * Q
    first = a * Q  # the slab's first column with a' ≥ a
    if first + tl.program_id(2) * BN >= size:
        return
    rb = (tl.program_id(1) * BM + tl.arange(0, BM)).to(tl.int64)
    cols = first + tl.program_id(2) * BN + tl.arange(0, BN).to(tl.int64)
    a2 = cols // Q
    b2 = cols % Q
    acc_t = tl.float64 if o_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BM, BN), dtype=acc_t)
    live = cols < size
    for i0 in range(0, N, BK):
        ri = (i0 + tl.arange(0, BK)).to(tl.int64)
        xa = tl.load(x_ptr + rb[:, None] * N + ri[None, :], mask=(rb[:, None] < Q) & (ri[None, :] < N), other=0.0)
        g = tl.zeros((BK, BN), dtype=acc_t)
        for c in range(KK):
            ra = tl.load(r_ptr + ri * KK * P + c * P + a, mask=ri < N, other=0.0)
            rcol = tl.load(
                r_ptr + ri[:, None] * KK * P + c * P + a2[None, :], mask=(ri[:, None] < N) & live[None, :], other=0.0
            )
            g += ra[:, None] * rcol
        xb = tl.load(x_ptr + b2[None, :] * N + ri[:, None], mask=(ri[:, None] < N) & live[None, :], other=0.0)
        acc += tl.dot(xa, (g * xb).to(xa.dtype), input_precision=PREC)
    tile = (acc * scale).to(o_ptr.dtype.element_ty)
    rows = first + rb
    inside = (rb[:, None] < Q) & live[None, :]
    tl.store(o_ptr + rows[:, None] * size + cols[None, :], tile, mask=inside)
    tl.store(o_ptr + cols[None, :] * size + rows[:, None], tile, mask=inside & (a2[None, :] > a))


def gn_assemble(inputs: torch.Tensor, roots: torch.Tensor, scale: float) -> torch.Tensor:
    """Triton fused Gauss–Newton block assembly, one triangle (see :func:`.reference.gn_assemble`)."""
    inputs, roots = inputs.contiguous(), roots.contiguous()
    q, n = inputs.shape
    _, kk, p = roots.shape
    size = p * q
    out = torch.empty(size, size, dtype=inputs.dtype, device=inputs.device)
    if size == 0:
        return out

    def grid(meta):
        return (p, triton.cdiv(q, meta["BM"]), triton.cdiv(size, meta["BN"]))

    _gn_assemble[grid](inputs, roots, out, q, n, kk, p, float(scale), PREC=_precision(inputs))
    return out


@triton.autotune(
    configs=_configs([({"BM": 32, "BP": 16}, 2, 2), ({"BM": 64, "BP": 32}, 4, 2), ({"BM": 128, "BP": 32}, 8, 2)]),
    key=["M", "P"],
    restore_value=["o_ptr"],  # the kernel accumulates into out: timing runs must not add up
)
@triton.jit
def _gn_gram(r_ptr, g_ptr, o_ptr, M, P, N, KK, scale, PREC: tl.constexpr, BM: tl.constexpr, BP: tl.constexpr):
    """One (BM × BM) tile of out += c (R Rᵀ) ∘ (G ⊗ 1): tiles with j ≥ i only, and the tile (i, j)
    also writes its transpose to (j, i), so that one triangle of R Rᵀ is computed."""
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
        acc += tl.dot(a, tl.trans(b), input_precision=PREC)
    inside = (rm[:, None] < M) & (rn[None, :] < M)
    g = tl.load(g_ptr + (rm // KK)[:, None] * N + (rn // KK)[None, :], mask=inside, other=0.0)
    tile = acc * g * scale
    here = o_ptr + rm[:, None] * M + rn[None, :]
    tl.store(here, tl.load(here, mask=inside, other=0.0) + tile.to(o_ptr.dtype.element_ty), mask=inside)
    if tj > ti:
        there = o_ptr + rn[None, :] * M + rm[:, None]
        tl.store(there, tl.load(there, mask=inside, other=0.0) + tile.to(o_ptr.dtype.element_ty), mask=inside)


def gn_gram(roots: torch.Tensor, input_gram: torch.Tensor, scale: float, out: torch.Tensor) -> torch.Tensor:
    """Triton sample-space Gram accumulation, one triangle (see :func:`.reference.gn_gram`)."""
    n, kk, p = roots.shape
    m = n * kk
    flat = roots.reshape(m, p).contiguous()
    g = input_gram.contiguous()
    if not out.is_contiguous():
        raise ValueError("gn_gram accumulates into a contiguous out")
    if m == 0:
        return out

    def grid(meta):
        return (triton.cdiv(m, meta["BM"]), triton.cdiv(m, meta["BM"]))

    _gn_gram[grid](flat, g, out, m, p, n, kk, float(scale), PREC=_precision(roots))
    return out
