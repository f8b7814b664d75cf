r"""Batched Gauss–Newton blocks: :math:`c\sum_i (J_i^\top\Lambda_i J_i)\otimes x_i x_i^\top + s\,\mathrm{Id}`.

This is the exact layer Hessian of ReLU and CE UFMs and MLP heads (theory.md §3.6–3.7): the map
:math:`W_l \mapsto Z` is piecewise linear, so the Hessian of the fit term with respect to one
layer is its Gauss–Newton matrix. Here :math:`x_i` is the input of layer l for sample i,
:math:`J_i` the Jacobian of sample i's output with respect to the layer's output (the ReLU masks
enter here), :math:`\Lambda_i` the output Hessian of the loss (I for MSE,
:math:`\mathrm{diag}(p_i)-p_ip_i^\top` for CE) and c = 1/N for the mean.

Products go through :func:`fastdnc.kernels.dispatch.gn_product` (an R-op forward and a VJP back,
with no per-sample Kronecker term formed); ``to_dense`` through the streamed assembly kernel
:func:`fastdnc.kernels.dispatch.gn_assemble`; ``diagonal`` and ``trace`` are exact and cheap.
"""

from __future__ import annotations

import torch

from ..kernels import dispatch
from ..kernels.reference import Upstream, gn_jacobian_roots
from .operator import CurvatureOperator, describe


class BatchedGaussNewton(CurvatureOperator):
    """Gauss–Newton block of one (p × q) parameter matrix, summed over samples (see module doc).

    Args:
        inputs: X (q × N) with the layer inputs as columns, or ``None`` for :math:`x_i = e_i`
            (the block of a feature matrix itself; then q = N).
        upstream: ``[(W, mask), …]`` from the block's output to Z (see
            :func:`fastdnc.kernels.reference.gn_product`).
        probs: softmax probabilities (K × N) for CE, ``None`` for MSE.
        num_outputs: K. p: rows of the parameter block.
        scale: c (default 1/N). shift: s (e.g. weight decay).
    """

    def __init__(self, inputs: torch.Tensor | None, upstream: Upstream, probs: torch.Tensor | None,
                 num_outputs: int, p: int, num_samples: int, scale: float | None = None, shift: float = 0.0,
                 backend: str = "auto") -> None:
        q = num_samples if inputs is None else inputs.shape[0]
        ref = inputs if inputs is not None else (upstream[0][0] if upstream else probs)
        if ref is None:
            raise ValueError("give inputs, upstream or probs: the block's dtype and device come from them")
        super().__init__(p * q, ref.dtype, ref.device, block_shapes=[(p, q)])
        self.inputs, self.upstream, self.probs = inputs, upstream, probs
        self.num_outputs, self.p, self.q, self.n = num_outputs, p, q, num_samples
        self.scale = 1.0 / num_samples if scale is None else float(scale)
        self.shift, self.backend = float(shift), backend
        self._roots: torch.Tensor | None = None

    def with_shift(self, shift: float) -> BatchedGaussNewton:
        return BatchedGaussNewton(self.inputs, self.upstream, self.probs, self.num_outputs, self.p, self.n,
                                  self.scale, self.shift + shift, self.backend)

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        x = v.T.reshape(v.shape[1], self.p, self.q)
        y = dispatch.gn_product(self.inputs, self.upstream, self.probs, x, self.scale, backend=self.backend)
        if self.shift:
            y = y + self.shift * x
        return y.reshape(v.shape[1], -1).T

    def roots(self) -> torch.Tensor:
        """Per-sample :math:`B_i = J_i^\\top L_i` as (K, p, N), computed once and cached."""
        if self._roots is None:
            like = torch.empty(0, dtype=self.dtype, device=self.device)
            self._roots = gn_jacobian_roots(self.upstream, self.probs, self.num_outputs, self.p, self.n, like)
        return self._roots

    def diagonal(self) -> torch.Tensor:
        """Exact: diag[(a, b)] = c Σ_i ‖B_i[a, :]‖² x_{ib}² (+ s)."""
        g = self.roots().square().sum(dim=0)  # (p, N)
        d = g if self.inputs is None else g @ self.inputs.square().T
        return self.scale * d.reshape(-1) + self.shift

    def to_dense(self, chunk: int = 1024) -> torch.Tensor:
        """The explicit block, assembled by the streaming kernel (no (N·K) × P intermediate)."""
        self._require_small("to_dense")
        if self.inputs is None:  # block diagonal over samples: [(a, i), (a', i)] = c (B_i B_iᵀ)[a, a']
            r = self.roots()
            g = torch.einsum("cai,cbi->iab", r, r)
            out = torch.zeros(self.p, self.n, self.p, self.n, dtype=self.dtype, device=self.device)
            idx = torch.arange(self.n, device=self.device)
            out[:, idx, :, idx] = self.scale * g
            out = out.reshape(self.size, self.size)
        else:
            out = dispatch.gn_assemble(self.inputs, self.upstream, self.probs, self.num_outputs, self.p, self.scale,
                                       backend=self.backend)
        if self.shift:
            out.diagonal().add_(self.shift)
        return out

    def eigh(self):
        return torch.linalg.eigh(self.to_dense())

    def cache_info(self) -> dict[str, str]:
        info = {} if self.inputs is None else {"inputs": describe(self.inputs)}
        for j, (w, d) in enumerate(self.upstream):
            info[f"upstream{j}.weight"] = describe(w)
            if d is not None:
                info[f"upstream{j}.mask"] = describe(d)
        if self.probs is not None:
            info["probs"] = describe(self.probs)
        if self._roots is not None:
            info["roots"] = describe(self._roots)
        return info
