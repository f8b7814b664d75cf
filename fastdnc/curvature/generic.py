r"""Drop-in curvature operators for any PyTorch model: ``fd.HessianOperator`` and ``fd.GGNOperator``.

``op = fd.HessianOperator(model, loss_fn, data, params=None)`` is the Hessian of the empirical
risk :math:`\mathcal L(\theta) = \sum_b \frac{n_b}{N}\,\ell_b(\theta)` over the whole data set
(``loss_fn`` with ``reduction="mean"``; each batch is weighted by its size n_b, so unequal batches
give the full-data mean), with respect to ``params`` (default: every parameter that requires
grad), flattened row-major in that order. ``data`` is ``(X, y)`` or an iterable of ``(X, y)``
batches; it is read **once**, when the operator is built, into a fixed list of batches, so every
product sees the same data in the same order (a shuffling DataLoader cannot make two products
disagree). ``reduction="sum"`` is also accepted.

* **Fused path**: an ``nn.Sequential`` of ``nn.Linear`` layers (with or without bias) and
  ``nn.ReLU`` / ``nn.Identity`` activations, with ``nn.MSELoss`` or ``nn.CrossEntropyLoss`` and all
  its parameters, uses the analytic R-op of :class:`~fastdnc.curvature.full.LayeredHessian`
  (cached forward state, one set of GEMMs per block of vectors).
* **Generic path**: any other module, through ``torch.func``: forward-over-reverse
  (``mode="forward-over-reverse"``, ``jvp`` of ``grad``, the default) or reverse-over-reverse
  (``mode="reverse-over-reverse"``, ``vjp`` of ``grad``), vectorised over the columns with ``vmap``.
* ``GGNOperator`` is :math:`\sum_b \frac{n_b}{N} J_b^\top \nabla^2\ell_b J_b` (jvp, loss HVP, vjp).
* ``check_deterministic=True`` runs two passes over the data with one random vector and raises
  :class:`NonDeterministicError` when they differ (shuffled loaders, dropout, …).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from ..models import MLPHead
from .full import LayeredHessian
from .operator import CurvatureOperator

MODES = ("forward-over-reverse", "reverse-over-reverse")


class NonDeterministicError(RuntimeError):
    """Two passes over the data gave different products."""


def _batches(data) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [data]
    if not isinstance(data, Iterable):
        raise TypeError("data must be (X, y) or an iterable of (X, y) batches")
    out = [tuple(b) for b in data]
    if not out:
        raise ValueError("data has no batches")
    for i, b in enumerate(out):
        if len(b) != 2 or not isinstance(b[0], torch.Tensor):
            raise TypeError(f"batch {i} is not an (X, y) pair of tensors")
    return out


def _reduction(loss_fn) -> str:
    red = getattr(loss_fn, "reduction", "mean")
    if red not in ("mean", "sum"):
        raise ValueError(f"loss_fn must use reduction='mean' or 'sum', got {red!r}")
    return red


class _ModuleOperator(CurvatureOperator):
    """Shared machinery; subclasses define ``_batch_product(v, x, y)`` on one batch."""

    def __init__(self, model: nn.Module, loss_fn, data, params: Sequence[torch.Tensor] | None, mode: str,
                 check_deterministic: bool, fused: bool | None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        named = dict(model.named_parameters())
        if params is None:
            chosen = [(n, p) for n, p in named.items() if p.requires_grad]
        else:
            ids = {id(p): n for n, p in named.items()}
            missing = [i for i, p in enumerate(params) if id(p) not in ids]
            if missing:
                raise ValueError(f"params {missing} are not parameters of the model")
            chosen = [(ids[id(p)], p) for p in params]
        if not chosen:
            raise ValueError("no parameters to differentiate")
        ref = chosen[0][1]
        super().__init__(sum(p.numel() for _, p in chosen), ref.dtype, ref.device, [p.shape for _, p in chosen])
        self.model, self.loss_fn, self.mode = model, loss_fn, mode
        self.names = [n for n, _ in chosen]
        self.params = {n: p.detach() for n, p in chosen}
        self.batches = _batches(data)
        self.reduction = _reduction(loss_fn)
        self.num_data = sum(int(x.shape[0]) for x, _ in self.batches)
        self._fused = self._build_fused() if fused is not False and len(chosen) == len(named) else None
        if fused and self._fused is None:
            raise ValueError("the fused path needs an nn.Sequential of Linear and ReLU/Identity layers, MSELoss or "
                             "CrossEntropyLoss, and all of its parameters")
        if check_deterministic:
            self.check_deterministic()

    def _weight(self, n_b: int) -> float:
        return n_b / self.num_data if self.reduction == "mean" else 1.0

    def _flat(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for n, s in zip(self.names, self.block_shapes):
            out[n] = v[i : i + s.numel()].reshape(s)
            i += s.numel()
        return out

    def _loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._apply_loss(functional_call(self.model, params, (x,)), y)

    def _apply_loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if isinstance(self.loss_fn, nn.MSELoss):
            # the same loss written out: torch's mse_loss backward fails under jvp-of-grad with vmap
            # ("ZeroTensors are immutable"), the written-out form does not
            sq = (z - y).square()
            return sq.mean() if self.reduction == "mean" else sq.sum()
        return self.loss_fn(z, y)

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        if self._fused is not None:
            return self._fused._matmat(v) * self._fused_scale
        total = None
        for x, y in self.batches:
            cols = vmap(lambda c: self._flatten(self._batch_product(self._flat(c), x, y)), in_dims=1, out_dims=1,
                        randomness="same")(v)
            cols = cols * self._weight(int(x.shape[0]))
            total = cols if total is None else total + cols
        return total.detach()  # the parameters left out of ``params`` would otherwise carry a graph

    def _flatten(self, d: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([d[n].reshape(-1) for n in self.names])

    # ------------------------------------------------------------------ fused nn.Sequential path
    def _build_fused(self):
        seq = self.model
        if not isinstance(seq, nn.Sequential) or not isinstance(self.loss_fn, (nn.MSELoss, nn.CrossEntropyLoss)):
            return None
        linears, acts = [], set()
        for i, mod in enumerate(seq):
            if isinstance(mod, nn.Linear):
                linears.append(mod)
            elif isinstance(mod, (nn.ReLU, nn.Identity)):
                if i == 0 or i == len(seq) - 1 or not isinstance(seq[i - 1], nn.Linear):
                    return None
                acts.add(type(mod))
            else:
                return None
        if not isinstance(seq[-1], nn.Linear) or len(acts) > 1 or len(linears) != 1 + sum(
                not isinstance(m, nn.Linear) for m in seq) or len({lin.bias is None for lin in linears}) > 1:
            return None
        activation = "relu" if nn.ReLU in acts else "linear"
        k = linears[-1].out_features
        if k < 2:  # MLPHead needs K ≥ 2 outputs; one-output regressions take the generic path
            return None
        x = torch.cat([b[0] for b in self.batches]).to(self.dtype)
        y = torch.cat([b[1] for b in self.batches])
        if x.ndim != 2:
            return None
        ce = isinstance(self.loss_fn, nn.CrossEntropyLoss)
        if ce and (y.ndim != 1 or y.dtype.is_floating_point):
            return None
        labels = y if ce else torch.zeros(x.shape[0], dtype=torch.long)
        head = MLPHead(x.T.contiguous(), labels.to(x.device), [lin.out_features for lin in linears[:-1]], len(linears),
                       num_classes=k, activation=activation, loss="ce" if ce else "mse", weight_decay=0.0,
                       bias=linears[0].bias is not None)
        with torch.no_grad():
            for w, lin in zip(head.weights, linears):
                w.copy_(lin.weight)
            if head.biases is not None:
                for b, lin in zip(head.biases, linears):
                    b.copy_(lin.bias)
            if not ce:
                if y.shape != (x.shape[0], k):
                    return None
                head.targets = y.T.to(self.dtype).contiguous()
        # the package's fit terms are 1/(2N) Σ‖z − y‖² and the mean CE; torch's MSELoss is
        # 1/(NK) Σ (z − y)² (mean) = 2/K × ours, or Σ (z − y)² (sum) = 2N × ours
        n = x.shape[0]
        if ce:
            scale = 1.0 if self.reduction == "mean" else float(n)
        else:
            scale = 2.0 / k if self.reduction == "mean" else 2.0 * n
        self._fused_scale = scale
        return LayeredHessian(head, include_features=False, decay=False, ggn=isinstance(self, GGNOperator))

    # ------------------------------------------------------------------ checks
    def check_deterministic(self, rtol: float = 1e-5, atol: float = 1e-8) -> None:
        """Two passes over the data with one random vector must agree (else NonDeterministicError)."""
        v = torch.randn(self.size, 1, generator=torch.Generator().manual_seed(0), dtype=self.dtype).to(self.device)
        fused, self._fused = self._fused, None
        try:
            a, b = self._matmat(v), self._matmat(v)
        finally:
            self._fused = fused
        if not torch.allclose(a, b, rtol=rtol, atol=atol):
            raise NonDeterministicError(
                f"two passes over the data gave products differing by {float((a - b).abs().max()):.3e}: the data "
                "order or the model is random (shuffled DataLoader, dropout, ...); fix the order or use eval mode")


class HessianOperator(_ModuleOperator):
    """The Hessian of the empirical risk of any ``nn.Module`` (see the module docstring)."""

    def __init__(self, model: nn.Module, loss_fn, data, params: Sequence[torch.Tensor] | None = None, *,
                 mode: str = "forward-over-reverse", check_deterministic: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__(model, loss_fn, data, params, mode, check_deterministic, fused)

    def _batch_product(self, v, x, y):
        f = lambda p: self._loss(p, x, y)  # noqa: E731
        if self.mode == "forward-over-reverse":
            return jvp(grad(f), (self.params,), (v,))[1]
        _, pull = vjp(grad(f), self.params)
        return pull(v)[0]


class GGNOperator(_ModuleOperator):
    """The generalised Gauss–Newton matrix :math:`J^\\top \\nabla^2_z\\ell\\, J` of any ``nn.Module``."""

    def __init__(self, model: nn.Module, loss_fn, data, params: Sequence[torch.Tensor] | None = None, *,
                 check_deterministic: bool = False, fused: bool | None = None) -> None:
        super().__init__(model, loss_fn, data, params, "forward-over-reverse", check_deterministic, fused)

    def _batch_product(self, v, x, y):
        def out(p):
            return functional_call(self.model, p, (x,))

        z, jv = jvp(out, (self.params,), (v,))
        hz = jvp(grad(lambda zz: self._apply_loss(zz, y)), (z,), (jv,))[1]
        _, pull = vjp(out, self.params)
        return pull(hz)[0]
