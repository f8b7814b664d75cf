"""Pure-torch reference implementations of every kernel (same signatures as the launchers).

They run on any device and dtype, define what the kernels compute, and are the baseline the
compiled kernels are tested and benchmarked against.
"""

from __future__ import annotations

import torch


def two_sided_product(output_factor: torch.Tensor, v: torch.Tensor, input_factor: torch.Tensor) -> torch.Tensor:
    """Batched two-sided product :math:`Y_j = O\\,V_j\\,I`.

    With the row-major vec, :math:`(O \\otimes I)\\,\\mathrm{vec}(V) = \\mathrm{vec}(O V I^\\top)`, so for
    symmetric factors this is the product of the Kronecker operator ``output_factor ⊗ input_factor``
    with each of the ``batch`` matrices ``V_j``.

    Args:
        output_factor: O, (p × p), acting on the output side (rows of V).
        v: (batch, p, q).
        input_factor: I, (q × q), acting on the input side (columns of V).

    Returns:
        (batch, p, q).
    """
    return torch.matmul(torch.matmul(output_factor, v), input_factor)


Upstream = list[tuple[torch.Tensor, torch.Tensor | None]]


def _output_hessian(probs: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
    """Λ_i u_i per column: identity (MSE) or ρ_i = diag(p_i) − p_i p_iᵀ (CE), for u (..., K, N)."""
    if probs is None:
        return u
    pu = probs * u
    return pu - probs * pu.sum(dim=-2, keepdim=True)


def gn_product(
    inputs: torch.Tensor | None, upstream: Upstream, probs: torch.Tensor | None, v: torch.Tensor, scale: float
) -> torch.Tensor:
    r"""Masked batched Gauss–Newton product :math:`Y_j = c \sum_i J_i^\top \Lambda_i J_i V_j x_i x_i^\top`.

    The block :math:`c \sum_i (J_i^\top \Lambda_i J_i) \otimes x_i x_i^\top` is never formed: the
    perturbation :math:`V_j X` is pushed forward through the layers above (an R-op), multiplied
    by the output Hessian, and pulled back (a VJP).

    Args:
        inputs: X (q × N), the layer inputs :math:`x_i` as columns; ``None`` means :math:`x_i = e_i`
            (the Hessian block of the features themselves, q = N).
        upstream: ``[(W, D), …]`` from the layer's output to Z: the perturbation maps as
            :math:`U \leftarrow W (D \odot U)`; ``D`` is a 0/1 mask (d × N) or ``None``.
        probs: softmax probabilities (K × N) for CE; ``None`` for MSE (Λ = I).
        v: (k, p, q). scale: c (1/N for a mean loss).

    Returns:
        (k, p, q).
    """
    u = v if inputs is None else v @ inputs
    for w, d in upstream:
        u = w @ (u if d is None else d * u)
    u = _output_hessian(probs, u)
    for w, d in reversed(upstream):
        u = w.T @ u
        if d is not None:
            u = d * u
    return scale * (u if inputs is None else u @ inputs.T)


def gn_jacobian_roots(
    upstream: Upstream, probs: torch.Tensor | None, num_outputs: int, p: int, n: int, like: torch.Tensor
) -> torch.Tensor:
    r"""Per-sample roots :math:`B_i^\top` with :math:`B_i = J_i^\top L_i`, as an (N, K, p) tensor.

    :math:`L_iL_i^\top = \Lambda_i`: :math:`L_i = I` (MSE) or
    :math:`\mathrm{diag}(\sqrt{p_i}) - p_i\sqrt{p_i}^\top` (CE), so that
    :math:`J_i^\top\Lambda_iJ_i = B_iB_i^\top`. Computed by pulling the K columns of
    :math:`L_i` back through ``upstream`` (masks included); ``like`` gives dtype and device.
    """
    eye = torch.eye(num_outputs, dtype=like.dtype, device=like.device)
    if probs is None:
        u = eye[:, :, None].expand(num_outputs, num_outputs, n)
    else:
        s = probs.sqrt()
        u = eye[:, :, None] * s[None, :, :] - probs[None, :, :] * s[:, None, :]  # [c, out, i]
    for w, d in reversed(upstream):
        u = w.T @ u
        if d is not None:
            u = d * u
    if u.shape[1] != p:
        raise ValueError(f"upstream maps to {u.shape[1]} rows, expected p={p}")
    return u.permute(2, 0, 1).contiguous()


def gn_assemble(inputs: torch.Tensor, roots: torch.Tensor, scale: float, chunk: int | None = None) -> torch.Tensor:
    r"""The explicit (pq × pq) block :math:`c \sum_i (B_iB_i^\top) \otimes x_i x_i^\top`, streamed.

    Args:
        inputs: X (q × N). roots: (N, K, p) from :func:`gn_jacobian_roots`. scale: c.

    Entry :math:`[(a,b),(a',b')] = c\sum_i G_i[a,a']\,x_{ib}x_{ib'}` with :math:`G_i = B_iB_i^\top`:
    one GEMM :math:`\mathcal G^\top\mathcal Y` of the packed upper triangles,
    :math:`\mathcal G[i, (a\le a')] = G_i[a,a']` and :math:`\mathcal Y[i, (b\le b')] = x_{ib}x_{ib'}`,
    then unpacked by symmetry slab by slab: :math:`2N\cdot\frac{p(p+1)}2\cdot\frac{q(q+1)}2
    \approx P^2N/2` flops (a quarter of forming the Kronecker rows), and besides the output
    O(p²q² / 4 + chunk · (p² + q²)) memory, ``chunk`` samples at a time.
    """
    q, n = inputs.shape
    p = roots.shape[2]
    dev, dt = inputs.device, inputs.dtype
    ip, jp = torch.triu_indices(p, p, device=dev)
    iq, jq = torch.triu_indices(q, q, device=dev)
    acc = torch.zeros(ip.numel(), iq.numel(), dtype=dt, device=dev)
    chunk = chunk or max(1, min(n, (1 << 21) // (p * p + iq.numel())))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        g = torch.einsum("nka,nkb->nab", roots[s:e], roots[s:e])[:, ip, jp]
        x = inputs[:, s:e].T
        acc.addmm_(g.T, x[:, iq] * x[:, jq])
    acc.mul_(scale)
    # position of (a, a') and (b, b') in the packed triangles, both orders
    mp = torch.empty(p, p, dtype=torch.long, device=dev)
    mp[ip, jp] = mp[jp, ip] = torch.arange(ip.numel(), device=dev)
    mq = torch.empty(q, q, dtype=torch.long, device=dev)
    mq[iq, jq] = mq[jq, iq] = torch.arange(iq.numel(), device=dev)
    out = torch.empty(p * q, p * q, dtype=dt, device=dev)
    for a in range(p):  # row slab a: out[(a, b), (a', b')] = acc[mp[a, a'], mq[b, b']]
        slab = acc[mp[a]][:, mq.reshape(-1)].view(p, q, q)  # [a', b, b']
        out[a * q : (a + 1) * q].view(q, p, q).copy_(slab.permute(1, 0, 2))
    return out


def gn_sample_core(roots: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r"""Per-sample Gauss–Newton core :math:`\mathrm{out}[j, i] = B_i (B_i^\top u[j, i])`.

    Args:
        roots: (N, K, p), sample i's :math:`B_i^\top` (see :func:`gn_jacobian_roots`; the masks, the
            layers above and Λ_i are folded in, so :math:`B_iB_i^\top = J_i^\top\Lambda_iJ_i`).
        u: (k, N, p), the perturbations :math:`u_{ji} = V_j x_i` of the layer's output, per sample.

    Returns:
        (k, N, p).
    """
    w = torch.einsum("ica,jia->jic", roots, u)
    return torch.einsum("ica,jic->jia", roots, w)
