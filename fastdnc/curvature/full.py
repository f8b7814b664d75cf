r"""Full Hessian and Gauss–Newton operators of UFMs and MLP heads: ``fd.hessian`` and ``fd.ggn``.

The operator covers the blocks of ``model.parameter_blocks(include_features)`` in that order
(``W_1[, b_1], …, W_L[, b_L]``, then ``H_1``), each row-major. ``decay=True`` adds
:math:`\lambda_l` on the ``W_l`` blocks and :math:`\lambda_H` on ``H_1`` (biases are not decayed).

**General path** (ReLU or CE, biases, MLP heads): an analytic forward-over-reverse product (an
R-op), with the forward and backward states cached when the operator is built. For a direction
:math:`(\dot W_l, \dot b_l, \dot H_1)` and :math:`\sigma'' = 0`:

.. math::

    \dot P_{l+1} = \dot W_l\tilde h_l + W_l\dot{\tilde h}_l + \dot b_l,\quad
    \dot{\tilde h}_{l+1} = \sigma'(P_{l+1})\odot\dot P_{l+1},\quad
    \dot G_{L+1} = \ell''(Z)[\dot Z],

    \dot g_{W_l} = \dot G_{l+1}\tilde h_l^\top + G_{l+1}\dot{\tilde h}_l^\top,\quad
    \dot G_l = \sigma'(P_l)\odot(\dot W_l^\top G_{l+1} + W_l^\top\dot G_{l+1}),

with :math:`G_l` the cached gradient with respect to the pre-activations. The GGN drops the two
terms that carry :math:`G`. k vectors go through at once (matmat), as one batch of GEMMs.

**Deep linear MSE fast path** (no biases): after a one-off precompute of
:math:`A_{l+1} = W_L\cdots W_{l+1}` (K × d), :math:`S = H_1H_1^\top/N` and :math:`MB_l^\top`
(K × d) with :math:`M = RH_1^\top/N`, R = Z − Y and :math:`B_l = W_{l-1}\cdots W_1`, a product
never touches the N samples of the weight blocks and costs O(L·K·d²): it reads each
:math:`\dot W_l` three times and each :math:`W_l` twice, and no d × d product :math:`B_l` is stored.
With :math:`U_r = A_{r+1}\dot W_r` (K × d):

.. math::

    Q = \Big(\sum_r U_r B_r\Big) S\ [+ A_1\dot H_1H_1^\top/N],\qquad
    \hat E_l = U_{l+1}^\top + W_{l+1}^\top\hat E_{l+1}\ (\hat E_L = 0),

    X_{l+1} = M B_l^\top\dot W_l^\top + X_l W_l^\top\ (X_1 = 0\ [= R\dot H_1^\top/N]),

    (\mathcal H\dot\theta)_{W_l} = A_{l+1}^\top (Q B_l^\top) + \hat E_l (M B_l^\top) + A_{l+1}^\top X_l
    + \lambda_l\dot W_l,

the three terms being the Gauss–Newton block row :math:`\sum_r G_{lr}`, and the residual blocks
through :math:`\dot A_{l+1}` and through :math:`\dot H_l` (docs/theory.md §3.5). Two recursions give
every term: backward, :math:`Y_l = U_l + Y_{l+1}W_l` yields :math:`\hat E_l^\top = Y_{l+1}` and
:math:`\sum_r U_rB_r = Y_1`; forward, :math:`Z_l = QB_l^\top + X_l` obeys
:math:`Z_{l+1} = Z_lW_l^\top + MB_l^\top\dot W_l^\top`, so
:math:`(\mathcal H\dot\theta)_{W_l} = [A_{l+1}^\top\,|\,\hat E_l]\,[Z_l; MB_l^\top] + \lambda_l\dot W_l`. With the features,
:math:`(\mathcal H\dot\theta)_{H_1} = (\hat E_0 R + A_1^\top\dot Z)/N + \lambda_H\dot H_1`, which is
O(K·d·N) because the block itself has d·N entries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models import LayeredModel, require_layered
from .gram import GramOperator, SampleGram, layered_blocks
from .layout import split_flat
from .operator import CurvatureOperator, describe, renamed_ggn_flag
from .output_losses import OutputLoss, model_loss


def _times(x: torch.Tensor, w: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w (+ add) for a batch x (k, r, m) and one matrix w (m, n), as a single GEMM."""
    k, r, m = x.shape
    flat = x.reshape(k * r, m)
    prod = flat @ w if add is None else torch.addmm(add.reshape(k * r, -1), flat, w)
    return prod.view(k, r, -1)


def _join(blocks: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1).T


class _ModelOperator(GramOperator):
    """Shared set-up: block layout and decay of a layered model."""

    def __init__(self, model: LayeredModel, include_features: bool, decay: bool) -> None:
        model.check()
        if include_features and not model.features_trainable:
            raise ValueError("include_features=True needs trainable features (a DeepUFM), not an MLP head's input")
        blocks = model.parameter_blocks(include_features)
        super().__init__(sum(t.numel() for _, t in blocks), model.dtype, model.device, [t.shape for _, t in blocks])
        self.names = [n for n, _ in blocks]
        self.include_features = include_features
        self.decay = decay
        lam = {f"W_{l}": model.weight_decay[l - 1] for l in range(1, model.depth + 1)}
        lam["H_1"] = model.feature_decay
        self.lams = [lam.get(n, 0.0) if decay else 0.0 for n in self.names]
        self.num_samples, self.num_outputs = model.num_samples, model.num_classes
        self._largest = max(w.numel() for w in model.weights)

    def gemm_flops(self, k: int = 1) -> float:
        """A weight times the layer inputs over the samples, per vector."""
        return 2.0 * self._largest * self.num_samples * k

    def _add_decay(self, out: list[torch.Tensor], vs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [o + lam * v if lam else o for o, v, lam in zip(out, vs, self.lams)]

    def _gram_parts(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list | None, torch.Tensor, bool] | None:
        """(weights, layer inputs, masks, output root, has bias) of a GGN; ``None`` for a Hessian."""
        return None

    def gram_size(self) -> int | None:
        """N·K' when this is a GGN whose decay is one shift for every block (else no Gram route)."""
        if self.curvature != "ggn" or len(set(self.lams)) > 1:
            return None
        return self.num_samples * self.num_outputs

    def why_no_gram(self) -> str:
        if self.curvature != "ggn":
            return "a Hessian (its residual term is not a Gram); the GGN has one"
        return "the decay differs between blocks (biases are not decayed): G + diag(λ) is not a Gram plus one shift"

    def sample_gram(self, group: bool = True) -> SampleGram | None:
        parts = self._gram_parts() if self.gram_size() is not None else None
        if parts is None:
            return None
        weights, inputs, masks, root, bias = parts
        blocks = layered_blocks(weights, inputs, masks, root, bias, self.include_features)
        return SampleGram(blocks, 1.0, self.lams[0], group)


class LayeredHessian(_ModelOperator):
    """Exact Hessian (or GGN) of a layered model by the analytic R-op (see the module docstring)."""

    def __init__(
        self,
        model: LayeredModel,
        include_features: bool = False,
        decay: bool = True,
        ggn: bool | None = None,
        output_loss: Callable[[torch.Tensor], OutputLoss] | None = None,
        curvature: str = "hessian",
    ) -> None:
        """``curvature``: ``"hessian"`` or ``"ggn"`` (``ggn=True`` is its deprecated former name).
        ``output_loss``: a function of the output Z (K × N) returning the
        :class:`~fastdnc.curvature.output_losses.OutputLoss` to use instead of the model's own fit
        term (:func:`~fastdnc.curvature.output_losses.model_loss`; the drop-in operators pass their
        weighted, smoothed and binary losses)."""
        super().__init__(model, include_features, decay)
        self.curvature = renamed_ggn_flag(curvature, ggn, "ggn")
        with torch.no_grad():
            ws, bs = model.tensors()
            self.weights = [w.detach() for w in ws]
            self.has_bias = bs is not None
            st = model.states()
            self.inputs = [h.detach() for h in st.inputs]
            self.relu = model.activation == "relu"
            # σ'(P_l) for l = 2..L as 0/1 masks (ReLU'(0) = 0)
            self.masks = [None] + [(p > 0).to(p.dtype) for p in st.preactivations[1:-1]] if self.relu else None
            z = st.output.detach()
            self.output_loss: OutputLoss = model_loss(model, z) if output_loss is None else output_loss(z)
            g = self.output_loss.gradient()
            # G_{l+1}: gradient w.r.t. the pre-activation P_{l+1}, l = 1..L (G[l] for W_{l+1} in 0-based)
            grads = [None] * model.depth
            grads[-1] = g
            for l in range(model.depth - 1, 0, -1):
                g = self.weights[l].T @ g
                if self.relu:
                    g = g * self.masks[l]
                grads[l - 1] = g
            self.grads = grads

    def _gram_parts(self):
        return self.weights, self.inputs, self.masks, self.output_loss.hessian_root(), self.has_bias

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        vs = split_flat(v, self.block_shapes, vectors_first=True)
        depth = len(self.weights)
        step = 2 if self.has_bias else 1
        vw = vs[0 : step * depth : step]
        vb = vs[1 : step * depth : step] if self.has_bias else None
        vh = vs[-1] if self.include_features else None
        # forward tangents of the layer inputs ḣ_l (None = 0)
        hdot: list[torch.Tensor | None] = [vh]
        pdot = None
        for l in range(depth):
            pdot = vw[l] @ self.inputs[l]
            if hdot[l] is not None:
                pdot = pdot + self.weights[l] @ hdot[l]
            if vb is not None:
                pdot = pdot + vb[l][..., None]
            if l + 1 < depth:
                hdot.append(pdot * self.masks[l + 1] if self.relu else pdot)
        gdot = self.output_loss.hessian_product(pdot)
        out_w, out_b = [None] * depth, [None] * depth
        out_h = None
        for l in range(depth - 1, -1, -1):
            ow = gdot @ self.inputs[l].T
            if self.curvature == "hessian" and hdot[l] is not None:
                ow = ow + self.grads[l] @ hdot[l].transpose(-1, -2)
            out_w[l] = ow
            if vb is not None:
                out_b[l] = gdot.sum(dim=-1)
            if l == 0 and not self.include_features:
                break
            back = self.weights[l].T @ gdot
            if self.curvature == "hessian":
                back = back + vw[l].transpose(-1, -2) @ self.grads[l]
            if l == 0:
                out_h = back
            else:
                gdot = back * self.masks[l] if self.relu else back
        out = []
        for l in range(depth):
            out.append(out_w[l])
            if vb is not None:
                out.append(out_b[l])
        if self.include_features:
            out.append(out_h)
        return _join(self._add_decay(out, vs))

    def cache_info(self) -> dict[str, str]:
        info = {f"input_{l + 1}": describe(h) for l, h in enumerate(self.inputs)}
        info.update({f"grad_P{l + 2}": describe(g) for l, g in enumerate(self.grads)})
        if self.masks:
            info.update({f"mask_{l + 1}": describe(m) for l, m in enumerate(self.masks) if m is not None})
        info.update({f"loss.{k}": describe(t) for k, t in self.output_loss.cached().items()})
        return info


class LinearMSEHessian(_ModelOperator):
    r"""Exact Hessian (or GGN) of a deep linear MSE UFM without biases, O(L·K·d²) per product.

    Its precomputed statistics, by the symbols of the module docstring: ``above`` the products
    :math:`A_{l+1} = W_L\cdots W_{l+1}` (``above[0]`` = :math:`A_1`), ``feature_moment``
    :math:`S = H_1H_1^\top/N`, ``residual`` :math:`R = Z - Y` and ``residual_below`` the
    :math:`MB_l^\top` with :math:`M = RH_1^\top/N`."""

    def __init__(
        self,
        model: LayeredModel,
        include_features: bool = False,
        decay: bool = True,
        ggn: bool | None = None,
        curvature: str = "hessian",
    ) -> None:
        """``curvature``: ``"hessian"`` or ``"ggn"`` (``ggn=True`` is its deprecated former name)."""
        if model.activation != "linear" or model.loss_type != "mse" or model.biases is not None:
            raise ValueError("LinearMSEHessian needs a linear MSE model without biases")
        super().__init__(model, include_features, decay)
        self.curvature = renamed_ggn_flag(curvature, ggn, "ggn")
        with torch.no_grad():
            ws = [w.detach() for w in model.tensors()[0]]
            h1 = model.features.detach()
            n = model.num_samples
            depth = len(ws)
            self.weights = ws
            # A_{l+1} = W_L⋯W_{l+1} (A_{L+1} = I_K): a[l] is A_{l+1} for 0-based layer l, a[0] = A_1
            a = [None] * (depth + 1)
            a[depth] = torch.eye(model.num_classes, dtype=h1.dtype, device=h1.device)
            for l in range(depth - 1, -1, -1):
                a[l] = a[l + 1] @ ws[l]
            self.above = a
            self.feature_moment = h1 @ h1.T / n
            self.output_loss = model_loss(model, a[0] @ h1)
            r = self.output_loss.output - model.targets
            # M B_lᵀ with B_l = W_{l-1}⋯W_1 (K × d_l), by M B_{l+1}ᵀ = M B_lᵀ W_lᵀ
            mb = [r @ h1.T / n]
            for w in ws[:-1]:
                mb.append(mb[-1] @ w.T)
            self.residual_below = mb
            self.h1, self.residual, self.n = h1, r, n

    def _gram_parts(self):
        inputs = [self.h1]
        for w in self.weights[:-1]:
            inputs.append(w @ inputs[-1])
        return self.weights, inputs, None, self.output_loss.hessian_root(), False

    def reduce_sample_statistics(self, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> None:
        r"""Replace every statistic a product reads from the samples, :math:`S = H_1H_1^\top/N`
        (d × d) and :math:`MB_l^\top` (K × d_l), by ``reduce(statistic, name)``: the hook of the
        sharded operator (:func:`fastdnc.distributed.sharded_hessian`), which sums the ranks'
        weighted statistics once so that every later product is local."""
        self.feature_moment = reduce(self.feature_moment, "S = H1 H1ᵀ/N")
        self.residual_below = [reduce(t, "M Bᵀ") for t in self.residual_below]

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        vs = split_flat(v, self.block_shapes, vectors_first=True)
        k, depth = v.shape[1], len(self.weights)
        vw = vs[:depth]
        vh = vs[depth] if self.include_features else None
        a, ws, mb = self.above, self.weights, self.residual_below
        # backward: Y_l = U_l + Y_{l+1} W_l with U_l = A_{l+1} Ẇ_l, so Ê_lᵀ = Y_{l+1} and Σ_r U_r B_r = Y_1
        y = [None] * (depth + 1)
        for l in range(depth - 1, -1, -1):
            u = a[l + 1] @ vw[l]
            y[l] = u if y[l + 1] is None else _times(y[l + 1], ws[l], u)
        q = _times(y[0], self.feature_moment)
        if vh is not None:
            avh = a[0] @ vh
            q = q + avh @ self.h1.T / self.n
        # forward: Z_l = Q B_lᵀ + X_l, Z_{l+1} = Z_l W_lᵀ + M B_lᵀ Ẇ_lᵀ (GGN: Z_l = Q B_lᵀ), and
        # out_l = [A_{l+1}ᵀ | Ê_l] @ [Z_l ; M B_lᵀ] + λ_l Ẇ_l: one GEMM of inner size 2K (GGN: K)
        z = q if vh is None or self.curvature == "ggn" else q + (self.residual @ vh.transpose(-1, -2)) / self.n
        out = torch.empty(k, self.size, dtype=v.dtype, device=v.device)
        views, i = [], 0
        for s in self.block_shapes:
            views.append(out[:, i : i + s.numel()].view(k, *s))
            i += s.numel()
        for l in range(depth):
            left, right = a[l + 1].T.expand(k, -1, -1), z
            if self.curvature == "hessian" and y[l + 1] is not None:  # Ê_L = 0
                left = torch.cat([left, y[l + 1].transpose(-1, -2)], dim=2)
                right = torch.cat([z, mb[l].expand(k, -1, -1)], dim=1)
            torch.baddbmm(vw[l], left, right, beta=self.lams[l], out=views[l])
            if l + 1 < depth:
                # M B_lᵀ Ẇ_lᵀ as (Ẇ_l (M B_lᵀ)ᵀ)ᵀ: one GEMM that reads Ẇ_l in place (no transposed copy)
                extra = (
                    None
                    if self.curvature == "ggn"
                    else (vw[l].reshape(-1, vw[l].shape[-1]) @ mb[l].T).view(k, -1, z.shape[1])
                )
                z = _times(z, ws[l].T, None if extra is None else extra.transpose(-1, -2))
        if vh is not None:
            oh = a[0].T @ (y[0] @ self.h1 + avh) / self.n
            if self.curvature == "hessian":
                oh = oh + y[0].transpose(-1, -2) @ self.residual / self.n
            views[depth].copy_(oh + self.lams[depth] * vh if self.lams[depth] else oh)
        return out.T

    def cache_info(self) -> dict[str, str]:
        info = {"S=H1H1ᵀ/N": describe(self.feature_moment)}
        info.update({f"A_{l + 1}": describe(t) for l, t in enumerate(self.above)})
        info.update({f"MB_{l + 1}ᵀ": describe(t) for l, t in enumerate(self.residual_below)})
        return info


def _full(model: LayeredModel, include_features: bool, decay: bool, curvature: str, structured: bool | None):
    name = "fd.ggn" if curvature == "ggn" else "fd.hessian"
    require_layered(model, name, f"fd.{'GGN' if curvature == 'ggn' else 'Hessian'}Operator(model, loss_fn, data)")
    fast = model.activation == "linear" and model.loss_type == "mse" and model.biases is None
    if structured and not fast:
        raise ValueError("the structured path needs a linear MSE model without biases")
    if fast and structured is not False:
        return LinearMSEHessian(model, include_features, decay, curvature=curvature)
    return LayeredHessian(model, include_features, decay, curvature=curvature)


def hessian(
    model: LayeredModel, include_features: bool = False, decay: bool = True, structured: bool | None = None
) -> CurvatureOperator:
    """The exact full Hessian of a DeepUFM or MLP head (see the module docstring).

    ``structured=None`` picks the O(L·K·d²) path for linear MSE models without biases and the
    analytic R-op otherwise; ``True``/``False`` force one (``True`` raises where it does not apply).

    >>> import fastdnc as fd, torch
    >>> m = fd.DeepUFM(3, 2, 4, 3)
    >>> H = fd.hessian(m, include_features=True)
    >>> H.shape, type(H).__name__
    ((56, 56), 'LinearMSEHessian')
    """
    return _full(model, include_features, decay, "hessian", structured)


def ggn(
    model: LayeredModel, include_features: bool = False, decay: bool = True, structured: bool | None = None
) -> CurvatureOperator:
    """The exact generalised Gauss–Newton matrix :math:`J^\\top \\ell'' J` (+ decay), same layout."""
    return _full(model, include_features, decay, "ggn", structured)
