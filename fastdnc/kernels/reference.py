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


def gn_assemble(inputs: torch.Tensor, roots: torch.Tensor, scale: float, chunk: int | None = None) -> torch.Tensor:
    r"""The explicit (pq × pq) block :math:`c \sum_i (B_iB_i^\top) \otimes x_i x_i^\top`, streamed.

    Args:
        inputs: X (q × N). roots: (N, K, p) from :func:`fastdnc.curvature.gauss_newton.gn_jacobian_roots`. scale: c.

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
        roots: (N, K, p), sample i's :math:`B_i^\top` (see :func:`fastdnc.curvature.gauss_newton.gn_jacobian_roots`; the masks, the
            layers above and Λ_i are folded in, so :math:`B_iB_i^\top = J_i^\top\Lambda_iJ_i`).
        u: (k, N, p), the perturbations :math:`u_{ji} = V_j x_i` of the layer's output, per sample.

    Returns:
        (k, N, p).
    """
    w = torch.einsum("ica,jia->jic", roots, u)
    return torch.einsum("ica,jic->jia", roots, w)


def gn_gram(roots: torch.Tensor, input_gram: torch.Tensor, scale: float, out: torch.Tensor) -> torch.Tensor:
    r"""Accumulate one block's sample-space Gram: :math:`\mathrm{out} \mathrel{+}= c\,(RR^\top)
    \circ (G \otimes \mathbf 1_{K\times K})`, in place.

    With :math:`\Phi` the (pq × NK) matrix whose column (i, k) is :math:`B_i e_k \otimes x_i`, this
    is :math:`c\,\Phi^\top\Phi`: entry [(i, k), (j, l)] is :math:`c\,(B_i^\top B_j)_{kl}\,x_i^\top x_j`.

    Args:
        roots: R as (N, K, p), sample i's :math:`B_i^\top` (see
            :func:`fastdnc.curvature.gauss_newton.gn_jacobian_roots`).
        input_gram: G = XᵀX (N × N), the inputs' Gram (I for the features, all ones for a bias).
        scale: c.
        out: (N·K, N·K), accumulated into and returned.
    """
    n, k, _ = roots.shape
    flat = roots.reshape(n * k, -1)
    block = flat @ flat.T
    block.view(n, k, n, k).mul_(input_gram[:, None, :, None])
    return out.add_(block, alpha=scale)
