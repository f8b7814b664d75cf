r"""Batched Gauss–Newton blocks: :math:`c\sum_i (J_i^\top\Lambda_i J_i)\otimes x_i x_i^\top + s\,\mathrm{Id}`.

This is the exact layer Hessian of ReLU and CE UFMs and MLP heads (docs/theory.md §3.6–3.7): the map
:math:`W_l \mapsto Z` is piecewise linear, so the Hessian of the fit term with respect to one
layer is its Gauss–Newton matrix. Here :math:`x_i` is the input of layer l for sample i,
:math:`J_i` the Jacobian of sample i's output with respect to the layer's output (the ReLU masks
enter here), :math:`\Lambda_i` the output Hessian of the loss (I for MSE,
:math:`\mathrm{diag}(p_i)-p_ip_i^\top` for CE; any
:class:`~fastdnc.curvature.output_losses.OutputLoss` with unit sample weights) and c = 1/N for the mean.

Two product paths (``product=``), neither of which forms a per-sample Kronecker term:

* ``"jacobian"`` (default while the cache fits in ``jacobian_budget`` bytes): the per-sample roots
  :math:`B_i = J_i^\top L_i` (:math:`L_iL_i^\top = \Lambda_i`, masks folded in; N·K·p numbers)
  are computed once; a product is then two GEMMs with the layer inputs around the per-sample core
  kernel :math:`u_i \mapsto B_i(B_i^\top u_i)` (:func:`fastdnc.kernels.dispatch.gn_sample_core`):
  :math:`O(k(2pqN + 4KpN))` flops for k vectors.
* ``"rop"``: no cache; the perturbation is pushed forward through the layers above and pulled
  back (:func:`gn_product`; plain GEMMs and masks on every backend),
  :math:`O(k\,N \sum d_m d_{m+1})` flops.

``to_dense`` uses the streamed assembly kernel :func:`fastdnc.kernels.dispatch.gn_assemble`;
``diagonal`` and ``trace`` are exact and cheap.
"""

from __future__ import annotations

import warnings

import torch

from .._memory import PEAK_GN_ASSEMBLY
from ..kernels import dispatch
from ..models import LayeredModel
from .gram import GramBlock, GramOperator, SampleGram
from .operator import describe, renamed_argument
from .output_losses import OutputLoss, SoftmaxCrossEntropy, model_loss

Upstream = list[tuple[torch.Tensor, torch.Tensor | None]]


def gn_product(
    inputs: torch.Tensor | None, upstream: Upstream, output_loss: OutputLoss, v: torch.Tensor, scale: float
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
        output_loss: the loss at Z, whose Hessian product gives Λ_i (per-sample weights included).
        v: (k, p, q). scale: c (1/N for a mean loss).

    Returns:
        (k, p, q).
    """
    u = v if inputs is None else v @ inputs
    for w, d in upstream:
        u = w @ (u if d is None else d * u)
    u = output_loss.hessian_product(u)
    for w, d in reversed(upstream):
        u = w.T @ u
        if d is not None:
            u = d * u
    return scale * (u if inputs is None else u @ inputs.T)


def gn_jacobian_roots(upstream: Upstream, output_loss: OutputLoss, p: int) -> torch.Tensor:
    r"""Per-sample roots :math:`B_i^\top` with :math:`B_i = J_i^\top L_i`, as an (N, K', p) tensor.

    :math:`L_iL_i^\top = \Lambda_i` is ``output_loss.hessian_root()`` (:math:`L_i = I` for MSE,
    :math:`\mathrm{diag}(\sqrt{p_i}) - p_i\sqrt{p_i}^\top` for CE, times the root of the sample
    weight), so that :math:`J_i^\top\Lambda_iJ_i = B_iB_i^\top`. Computed by pulling the K'
    columns of :math:`L_i` back through ``upstream`` (masks included).
    """
    u = output_loss.hessian_root()  # [c, out, i]
    for w, d in reversed(upstream):
        u = w.T @ u
        if d is not None:
            u = d * u
    if u.shape[1] != p:
        raise ValueError(f"upstream maps to {u.shape[1]} rows, expected p={p}")
    return u.permute(2, 0, 1).contiguous()


def upstream_of(model: LayeredModel, pre: list[torch.Tensor], first: int, delta: float = 0.0) -> Upstream:
    r"""``[(W_m, D_m)]`` for m = first..L: the map from the pre-activation H_first to Z.

    The perturbation of :math:`H_m` goes through :math:`D_m = \sigma'(H_m)` (ReLU, m ≥ 2): 1 where
    :math:`H_m > 0`, ``delta`` = σ′(0) where it is exactly 0 (PyTorch: 0), else 0
    and then :math:`W_m`. For linear models the chain collapses into :math:`A = W_L \cdots W_{first}`.
    """
    ws = [w.detach() for w in model.weights]
    if model.activation == "linear":
        if first > model.depth:
            return []
        a = ws[first - 1]
        for w in ws[first:]:
            a = w @ a
        return [(a, None)]
    out = []
    for m in range(first, model.depth + 1):
        mask = None
        if m >= 2:
            mask = (pre[m - 1] > 0).to(pre[m - 1].dtype)
            if delta:
                mask = mask + delta * (pre[m - 1] == 0).to(mask.dtype)
        out.append((ws[m - 1], mask))
    return out


def unit_loss(model: LayeredModel, output: torch.Tensor) -> OutputLoss:
    """The model's own loss at ``output`` with unit sample weights (the blocks carry c = 1/N)."""
    return model_loss(model, output, weight=1.0)


class BatchedGaussNewton(GramOperator):
    """Gauss–Newton block of one (p × q) parameter matrix, summed over samples (see module doc).

    Args:
        inputs: X (q × N) with the layer inputs as columns, or ``None`` for :math:`x_i = e_i`
            (the block of a feature matrix itself; then q = N).
        upstream: ``[(W, mask), …]`` from the block's output to Z (see
            :func:`gn_product`).
        output_loss: the loss at Z with unit sample weights (Λ_i; e.g. :func:`unit_loss`), or
            ``None`` when the roots are given (:meth:`from_roots`). A tensor of softmax
            probabilities (the former ``probs``) is still read, with a deprecation warning.
        num_outputs: K. p: rows of the parameter block.
        scale: c (default 1/N). shift: s (e.g. weight decay).
        backend: kernel backend (see :mod:`fastdnc.kernels`).
        product: ``"jacobian"``, ``"rop"`` or ``"auto"`` (jacobian when its N·K·p cache fits
            ``jacobian_budget`` bytes); see the module docstring.
    """

    def __init__(
        self,
        inputs: torch.Tensor | None,
        upstream: Upstream,
        output_loss: OutputLoss | None,
        num_outputs: int,
        p: int,
        num_samples: int,
        scale: float | None = None,
        shift: float = 0.0,
        backend: str = "auto",
        product: str = "auto",
        jacobian_budget: int = 2**30,
        *,
        mode: str | None = None,
    ) -> None:
        q = num_samples if inputs is None else inputs.shape[0]
        if isinstance(output_loss, torch.Tensor):
            warnings.warn(
                "BatchedGaussNewton(probs) is deprecated: pass an OutputLoss (fastdnc.curvature.gauss_newton.unit_loss)",
                DeprecationWarning,
                stacklevel=2,
            )
            output_loss = SoftmaxCrossEntropy(output_loss.log(), output_loss, torch.ones_like(output_loss[0]))
        ref = inputs if inputs is not None else (upstream[0][0] if upstream else None)
        ref = ref if ref is not None or output_loss is None else output_loss.output
        if ref is None:
            raise ValueError("give inputs, upstream or output_loss: the block's dtype and device come from them")
        super().__init__(p * q, ref.dtype, ref.device, block_shapes=[torch.Size((p, q))])
        self.inputs, self.upstream, self.output_loss = inputs, upstream, output_loss
        self.num_outputs, self.p, self.q, self.n = num_outputs, p, q, num_samples
        self.scale = 1.0 / num_samples if scale is None else float(scale)
        self.shift, self.backend = float(shift), dispatch.check_backend(backend)
        product = renamed_argument(product, mode, "mode", "product")
        if product not in ("auto", "jacobian", "rop"):
            raise ValueError(f"product must be 'auto', 'jacobian' or 'rop', got {product!r}")
        cache_bytes = num_samples * num_outputs * p * torch.empty(0, dtype=self.dtype).element_size()
        self.product = ("jacobian" if cache_bytes <= jacobian_budget else "rop") if product == "auto" else product
        self.jacobian_budget = jacobian_budget
        self._roots: torch.Tensor | None = None

    @classmethod
    def from_roots(
        cls, inputs: torch.Tensor, roots: torch.Tensor, p: int, scale: float = 1.0, backend: str = "auto"
    ) -> BatchedGaussNewton:
        r"""The block :math:`c\sum_i B_iB_i^\top \otimes x_ix_i^\top` from given inputs X (q × N) and
        roots :math:`B_i^\top` (N, K', p) in the layout of :meth:`roots`, for models whose roots come
        from elsewhere (the vector–Jacobian products of any nn.Module)."""
        n, k = roots.shape[0], roots.shape[1]
        op = cls(inputs, [], None, k, p, n, scale=scale, backend=backend, product="jacobian")
        op._roots = roots
        return op

    def with_shift(self, shift: float) -> BatchedGaussNewton:
        op = BatchedGaussNewton(
            self.inputs,
            self.upstream,
            self.output_loss,
            self.num_outputs,
            self.p,
            self.n,
            self.scale,
            self.shift + shift,
            self.backend,
            self.product,
            self.jacobian_budget,
        )
        op._roots = self._roots
        return op

    def gemm_flops(self, k: int = 1) -> float:
        """The products with the inputs (N × q by q × p per vector)."""
        return 2.0 * self.n * self.p * self.q * k

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        x = v.T.reshape(v.shape[1], self.p, self.q)
        if self.product == "rop":
            y = gn_product(self.inputs, self.upstream, self.loss(), x, self.scale)
        else:
            # u_i = V x_i for every sample, as (k, N, p); then B_i B_iᵀ u_i; then Σ_i g_i x_iᵀ
            ut = (
                x.transpose(1, 2).contiguous()
                if self.inputs is None
                else torch.matmul(self.inputs.T, x.transpose(1, 2))
            )
            gt = dispatch.gn_sample_core(self.roots(), ut, backend=self.backend)
            y = gt.transpose(1, 2) if self.inputs is None else torch.matmul(gt.transpose(1, 2), self.inputs.T)
            y = self.scale * y
        if self.shift:
            y = y + self.shift * x
        return y.reshape(v.shape[1], -1).T

    def roots(self) -> torch.Tensor:
        """Per-sample :math:`B_i^\\top` (:math:`B_i = J_i^\\top L_i`) as (N, K, p), computed once and cached."""
        if self._roots is None:
            self._roots = gn_jacobian_roots(self.upstream, self.loss(), self.p)
        return self._roots

    def loss(self) -> OutputLoss:
        if self.output_loss is None:
            raise ValueError("this block was built from its roots (from_roots): it has no output loss to push through")
        return self.output_loss

    def diagonal(self) -> torch.Tensor:
        """Exact: diag[(a, b)] = c Σ_i ‖B_i[a, :]‖² x_{ib}² (+ s)."""
        g = self.roots().square().sum(dim=1).T  # (p, N)
        d = g if self.inputs is None else g @ self.inputs.square().T
        return self.scale * d.reshape(-1) + self.shift

    def to_dense(self, chunk: int = 1024) -> torch.Tensor:
        """The explicit block, assembled by the streaming kernel (no (N·K) × P intermediate)."""
        self._require_dense("explicit Gauss-Newton assembly", PEAK_GN_ASSEMBLY)
        if self.inputs is None:  # block diagonal over samples: [(a, i), (a', i)] = c (B_i B_iᵀ)[a, a']
            r = self.roots()
            g = torch.einsum("ica,icb->iab", r, r)
            out = torch.zeros(self.p, self.n, self.p, self.n, dtype=self.dtype, device=self.device)
            idx = torch.arange(self.n, device=self.device)
            out[:, idx, :, idx] = self.scale * g
            out = out.reshape(self.size, self.size)
        else:
            out = dispatch.gn_assemble(self.inputs, self.roots(), self.scale, backend=self.backend)
        if self.shift:
            out.diagonal().add_(self.shift)
        return out

    def gram_size(self) -> int:
        return self.n * self.num_outputs

    def sample_gram(self, group: bool = True) -> SampleGram:
        r""":math:`c\,(RR^\top)\circ(X^\top X\otimes\mathbf 1)` (:mod:`fastdnc.curvature.gram`)."""
        return SampleGram([GramBlock(self.roots(), self.inputs)], self.scale, self.shift, group)

    def why_no_gram(self) -> str:
        return ""  # every block has one

    def _dense_peak(self, eig_peak: float) -> float:
        return PEAK_GN_ASSEMBLY + eig_peak - 1  # assembled in one piece (to_dense), then decomposed

    def cache_info(self) -> dict[str, str]:
        info = {} if self.inputs is None else {"inputs": describe(self.inputs)}
        for j, (w, d) in enumerate(self.upstream):
            info[f"upstream{j}.weight"] = describe(w)
            if d is not None:
                info[f"upstream{j}.mask"] = describe(d)
        if self.output_loss is not None:
            info.update({f"loss.{k}": describe(t) for k, t in self.output_loss.cached().items()})
        if self._roots is not None:
            info["roots"] = describe(self._roots)
        return info
