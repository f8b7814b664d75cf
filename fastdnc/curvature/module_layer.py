r"""The exact Hessian of one ``nn.Linear`` layer inside any PyTorch model: ``fd.layer_hessian(net, layer, data=…, loss_fn=…)``.

For a layer :math:`y_i = W x_i (+ b)` that sees one input vector :math:`x_i \in \mathbb R^q` per
sample, the Hessian of the empirical risk :math:`\mathcal L = \sum_b \frac{n_b}{N}\ell_b` with respect
to :math:`W` (row-major vec, P = p·q) is

.. math::

    \mathcal H_W = \underbrace{\sum_i (B_iB_i^\top) \otimes x_ix_i^\top}_{\text{Gauss–Newton}}
                 + \underbrace{\sum_i M_i \otimes x_ix_i^\top}_{\text{residual}},\qquad
    B_i = J_i^\top L_i,\quad M_i = \nabla^2_{y_i}\big(g_i^\top z_i\big),

with :math:`J_i = \partial z_i/\partial y_i` (K × p, the network above the layer, read from K
vector–Jacobian products of the output with respect to the layer's output),
:math:`L_iL_i^\top = \Lambda_i` the Hessian of the loss at the output :math:`z_i` (K × K, read by K
Hessian-vector products of the loss and factored per sample; the batch weight :math:`n_b/N` and every
reduction, class weight or label smoothing of the loss are in it) and :math:`g_i = \partial\ell/\partial
z_i`. The **output factor** is :math:`B_iB_i^\top` (p × p), the **input factor** :math:`x_ix_i^\top`
(q × q), as in docs/theory.md §3.6–3.7 where :math:`B_i` carries :math:`A_{l+1}` and the ReLU masks.

* **Structured path** (the layer's input is one vector per sample, (N, q); every sample's output
  depends on its own input only): the Gauss–Newton part is a
  :class:`~fastdnc.curvature.gauss_newton.BatchedGaussNewton` built from the captured inputs and the
  per-sample roots (exact spectra through its sample-space Gram or its streamed assembly). When every
  operation between the layer and the output is piecewise linear (Linear, ReLU / LeakyReLU,
  max-pooling, flatten, dropout and BatchNorm in eval mode, residual additions of these) the
  residual is zero and this block **is** the Hessian: :attr:`ModuleLayerHessian.gauss_newton_is_exact`.
  This is not read from the module types but **proved** on the data: the residual's products with
  random probes are exactly zero on every batch. Otherwise the residual is added exactly: each of its
  products is one double backward through the kept graph of the network above the layer, with the
  same Kronecker structure over samples. ``curvature="ggn"`` gives the Gauss–Newton part on purpose.
* **Generic path** for every other layer (an ``nn.Linear`` applied per token, an ``nn.Conv2d``, a
  layer used twice or tied to another, hooks or a patched forward on the layer, a loss that couples
  samples or whose output Hessian is not positive semidefinite): the exact
  :class:`~fastdnc.curvature.generic.HessianOperator` (or GGN) restricted to the layer's parameters,
  and :attr:`ModuleLayerHessian.structure` says in one line why there is no Kronecker structure.

``bias=True`` includes the bias: the block of the augmented matrix :math:`[W\,|\,b]` (p × (q+1),
row-major), with :math:`x_i` extended by a 1. The checks that every path proves before it is used
(the coupling test, the residual test, the positive semidefinite output Hessian) cost a few
products of the network above the layer on each batch. The operator is a snapshot of the model at
the time it is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._memory import require_memory
from ..batches import Batch, declared_reduction, detect_reduction, read_batches, tensors_of
from .admission import check_loss_value, refuse_batch_statistics
from .functional import autodiff_friendly_attention
from .gauss_newton import BatchedGaussNewton
from .generic import GGNOperator, HessianOperator
from .gram import GramOperator
from .model_state import foreign_forward, global_hooks, hooks, parametrized
from .operator import CurvatureOperator, check_curvature, describe


class NoStructure(ValueError):
    """Why a layer's Hessian has no Kronecker structure (the generic path takes it)."""


@dataclass
class _Captured:
    """What one batch contributes: inputs (n_b, q'), roots (n_b, K', p), the fit gradient (p, q')
    and, where the residual is not zero, what its products need."""

    inputs: torch.Tensor
    roots: torch.Tensor
    gradient: torch.Tensor
    residual: tuple[torch.Tensor, torch.Tensor] | None  # (layer output leaf, ∂(g·z)/∂y with its graph)


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """``layer`` (a submodule or its dotted name) as (name, module), or a ValueError."""
    named = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in named:
            raise ValueError(f"the model has no submodule {layer!r} (its linear layers: {linear_names(model)})")
        return layer, named[layer]
    for name, mod in named.items():
        if mod is layer:
            return name, mod
    raise ValueError(
        f"{type(layer).__name__} is not a submodule of the model (its linear layers: {linear_names(model)})"
    )


def linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def layer_parameters(layer: nn.Module, bias: bool) -> list[torch.Tensor]:
    weight, b = getattr(layer, "weight", None), getattr(layer, "bias", None)
    params = [weight] if isinstance(weight, torch.Tensor) else []
    if bias and isinstance(b, torch.Tensor):
        params.append(b)
    if not params:
        raise ValueError(f"{type(layer).__name__} has no weight to differentiate")
    return params


class ResidualBlock(CurvatureOperator):
    r""":math:`\sum_i M_i \otimes x_ix_i^\top` with :math:`M_i = \nabla^2_{y_i}(g_i^\top z_i)`: each
    product pushes :math:`u_i = Vx_i` through one double backward of the kept graph above the layer."""

    def __init__(self, parts: list[_Captured], p: int, q: int) -> None:
        ref = parts[0].inputs
        super().__init__(p * q, ref.dtype, ref.device, [torch.Size((p, q))])
        self.parts, self.p, self.q = parts, p, q

    def gemm_flops(self, k: int = 1) -> float:
        return 2.0 * sum(part.inputs.shape[0] for part in self.parts) * self.p * self.q * k

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        k = v.shape[1]
        vs = v.T.reshape(k, self.p, self.q)
        out = torch.zeros_like(vs)
        with torch.enable_grad():
            for part in self.parts:
                if part.residual is None:
                    continue
                y, gy = part.residual
                u = torch.matmul(part.inputs, vs.transpose(1, 2))  # (k, n_b, p): u_i = V x_i
                for j in range(k):
                    (w,) = torch.autograd.grad(gy, y, u[j], retain_graph=True)
                    out[j] += w.T @ part.inputs
        return out.reshape(k, -1).T

    def cache_info(self) -> dict[str, str]:
        kept = [p for p in self.parts if p.residual is not None]
        return {"residual graphs": f"{len(kept)} batches"}


class ModuleLayerHessian(GramOperator):
    """The Hessian (or GGN) of one layer of any model: the sum of its ``parts`` (see the module
    docstring). ``structure`` says which path was taken and why; ``gauss_newton`` is the batched
    Gauss–Newton block of the structured path (``None`` on the generic path); ``fit_gradient`` is the
    gradient of the loss with respect to the block (its shape)."""

    def __init__(
        self,
        name: str,
        parts: list[CurvatureOperator],
        structure: str,
        gauss_newton: BatchedGaussNewton | None,
        fit_gradient: torch.Tensor | None,
        exact: bool,
        curvature: str = "hessian",
    ) -> None:
        first = parts[0]
        super().__init__(first.size, first.dtype, first.device, first.block_shapes)
        self.curvature = curvature
        self.layer_name, self.parts, self.structure = name, parts, structure
        self.gauss_newton, self.fit_gradient = gauss_newton, fit_gradient
        self.gauss_newton_is_exact = exact

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        out = self.parts[0].matmat(v)
        for op in self.parts[1:]:
            out = out + op.matmat(v)
        return out

    def gemm_flops(self, k: int = 1) -> float:
        return max(op.gemm_flops(k) for op in self.parts)

    def _only_gauss_newton(self) -> BatchedGaussNewton | None:
        return self.gauss_newton if len(self.parts) == 1 and self.gauss_newton is not None else None

    def to_dense(self, chunk: int = 1024) -> torch.Tensor:
        gn = self._only_gauss_newton()
        if gn is not None:
            return gn.to_dense()
        if self.gauss_newton is None:
            return self.parts[0].to_dense(chunk)
        return self.gauss_newton.to_dense() + self.parts[1].to_dense(chunk)

    def diagonal(self) -> torch.Tensor:
        return torch.stack([op.diagonal() for op in self.parts]).sum(dim=0)

    def gram_size(self) -> int | None:
        gn = self._only_gauss_newton()
        return None if gn is None else gn.gram_size()

    def why_no_gram(self) -> str:
        return "" if self._only_gauss_newton() is not None else f"not a pure Gauss-Newton block ({self.structure})"

    def sample_gram(self, group: bool = True):
        gn = self._only_gauss_newton()
        return None if gn is None else gn.sample_gram(group)

    def cache_info(self) -> dict[str, str]:
        out = {}
        for i, op in enumerate(self.parts):
            out.update({f"part{i}.{k}": v for k, v in op.cache_info().items()})
        if self.fit_gradient is not None:
            out["fit_gradient"] = describe(self.fit_gradient)
        return out

    def __repr__(self) -> str:
        return f"ModuleLayerHessian({self.layer_name!r}, shape={self.shape}, {self.structure})"


def module_layer_hessian(
    model: nn.Module,
    layer: nn.Module | str,
    data,
    loss_fn: Callable,
    *,
    curvature: str = "hessian",
    bias: bool = False,
    reduction: str | None = None,
    batch_size_fn: Callable | None = None,
    backend: str = "auto",
) -> ModuleLayerHessian:
    """The exact Hessian (``curvature="hessian"``) or GGN of ``loss_fn`` over ``data`` with respect to
    one layer's weight (and bias with ``bias``) of any ``model`` (see the module docstring)."""
    check_curvature(curvature)
    name, mod = resolve_layer(model, layer)
    params = layer_parameters(mod, bias)
    batches = read_batches(data, batch_size_fn)
    refuse_batch_statistics(model)
    try:
        return _structured(model, name, mod, batches, loss_fn, curvature, bias, reduction, backend)
    except NoStructure as why:
        cls = HessianOperator if curvature == "hessian" else GGNOperator
        op = cls(model, loss_fn, batches_as_data(batches), params=params, reduction=reduction, fused=False)
        return ModuleLayerHessian(name, [op], f"generic: {why}", None, None, curvature == "hessian", curvature)


def batches_as_data(batches: list[Batch]) -> list:
    """The read batches in a data format :func:`read_batches` takes again."""
    return [(b.kwargs if b.kwargs else (b.args[0] if len(b.args) == 1 else b.args), b.target) for b in batches]


def _why_no_structure(model: nn.Module, name: str, mod: nn.Module) -> str | None:
    if type(mod) is not nn.Linear:
        return f"{name!r} is a {type(mod).__name__}, not an nn.Linear"
    if foreign_forward(mod) or hooks(mod) or parametrized(mod):
        return f"{name!r} has hooks, a parametrisation or a patched forward"
    if global_hooks():
        return "global module hooks may change the layer's output"
    tied = [
        n for n, m in model.named_modules() if m is not mod and any(p is mod.weight for p in m._parameters.values())
    ]
    if tied:
        return f"the weight of {name!r} is also used by {tied}"
    return None


def _structured(
    model: nn.Module,
    name: str,
    mod: nn.Module,
    batches: list[Batch],
    loss_fn: Callable,
    curvature: str,
    bias: bool,
    reduction: str | None,
    backend: str,
) -> ModuleLayerHessian:
    why = _why_no_structure(model, name, mod)
    if why or not isinstance(mod, nn.Linear):
        raise NoStructure(why or f"{name!r} is not an nn.Linear")
    p, q = mod.out_features, mod.in_features + int(bias and mod.bias is not None)
    n = sum(b.size for b in batches)
    dtype, device = mod.weight.dtype, mod.weight.device
    reduction = declared_reduction(loss_fn, reduction)
    _check_deterministic(model, batches[0].to(device))
    parts = []
    for b in batches:
        captured, reduction = _capture(model, name, mod, b.to(device), loss_fn, reduction, n, bias, curvature)
        parts.append(captured)
    k = parts[0].roots.shape[1]
    require_memory(
        (n * k * p + n * q) * torch.empty(0, dtype=dtype).element_size(), f"the layer Hessian of {name!r}", device
    )
    inputs = torch.cat([c.inputs for c in parts]).T.contiguous()  # q × N
    roots = torch.cat([c.roots for c in parts])
    gn = BatchedGaussNewton.from_roots(inputs, roots, p, backend=backend)
    gradient = torch.stack([c.gradient for c in parts]).sum(dim=0)
    exact = all(c.residual is None for c in parts)
    if curvature == "ggn":
        structure = "batched Gauss-Newton (the GGN, as asked)"
        return ModuleLayerHessian(name, [gn], structure, gn, gradient, exact, "ggn")
    if exact:
        structure = "batched Gauss-Newton: the layers above are piecewise linear, so this block is the Hessian"
        return ModuleLayerHessian(name, [gn], structure, gn, gradient, True)
    structure = "batched Gauss-Newton plus the residual term (the layers above are not piecewise linear)"
    return ModuleLayerHessian(name, [gn, ResidualBlock(parts, p, q)], structure, gn, gradient, False)


def _check_deterministic(model: nn.Module, b: Batch) -> None:
    with torch.no_grad(), autodiff_friendly_attention():
        first, second = model(*b.args, **b.kwargs), model(*b.args, **b.kwargs)
    if isinstance(first, torch.Tensor) and not torch.equal(first, second):
        raise ValueError(
            "two forward passes of the first batch differ: the model is random (dropout in training mode?); "
            "call model.eval()"
        )


def _forward_with_leaf(model: nn.Module, name: str, mod: nn.Linear, b: Batch):
    """The model's output on batch ``b`` with the layer's output replaced by a leaf y (so that the
    output is a function of y alone), and the layer's input x."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_m, inputs, output):
        y = output.detach().requires_grad_()
        seen.append((inputs[0].detach(), y))
        return y

    handle = mod.register_forward_hook(hook)
    try:
        with torch.enable_grad(), autodiff_friendly_attention():
            z = model(*b.args, **b.kwargs)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise NoStructure(f"{name!r} runs {len(seen)} times in one forward pass")
    x, y = seen[0]
    if x.ndim != 2 or x.shape[0] != b.size:
        raise NoStructure(
            f"the input of {name!r} has shape {tuple(x.shape)}, not one vector per sample ({b.size}, q): "
            "the Hessian couples the rows it shares (a per-token or per-position layer)"
        )
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != b.size:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise NoStructure(f"the model's output is {shape}, not one vector per sample ({b.size}, K)")
    return x, y, z


def _output_hessian_root(loss_fn: Callable, z: torch.Tensor, b: Batch, weight: float, model: nn.Module):
    """(∂ℓ/∂z (n_b, K), L_iᵀ (n_b, K, K)) of the batch's weighted loss, with L_iL_iᵀ = Λ_i read by K
    Hessian-vector products; refuses a loss that couples samples or whose Λ_i is not PSD."""
    zz = z.detach().requires_grad_()
    with torch.enable_grad():
        loss = loss_fn(zz, b.target)
        check_loss_value(loss, model, tensors_of((b.args, b.kwargs, b.target)))
        (gz,) = torch.autograd.grad(loss * weight, zz, create_graph=True)
        k = z.shape[1]
        eye = torch.eye(k, dtype=z.dtype, device=z.device)
        rows = []
        for c in range(k):
            (row,) = torch.autograd.grad(gz, zz, eye[c].expand_as(zz), retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(zz) if row is None else row)
        lam = torch.stack(rows, dim=1)  # (n_b, K, K): lam[i, c] = row c of Λ_i
        probe = torch.randn(zz.shape, generator=torch.Generator().manual_seed(1), dtype=z.dtype).to(z.device)
        (whole,) = torch.autograd.grad(gz, zz, probe, allow_unused=True)
    whole = torch.zeros_like(zz) if whole is None else whole
    blocks = torch.einsum("ick,ik->ic", lam, probe)
    scale = max(float(torch.einsum("ick,ik->ic", lam.abs(), probe.abs()).max()), torch.finfo(z.dtype).tiny)
    if float((whole - blocks).abs().max()) > torch.finfo(z.dtype).eps ** 0.5 * scale:
        raise NoStructure("the loss couples the samples of a batch (its Hessian at the output is not block diagonal)")
    evals, evecs = torch.linalg.eigh(0.5 * (lam + lam.transpose(1, 2)))
    top = float(evals.abs().max()) if evals.numel() else 0.0
    if bool((evals < -1e3 * torch.finfo(z.dtype).eps * max(top, torch.finfo(z.dtype).tiny)).any()):
        raise NoStructure("the loss's Hessian at the output is not positive semidefinite (no Gauss-Newton root)")
    root_t = (evecs * evals.clamp_min(0).sqrt()[:, None, :]).transpose(1, 2)  # L_iᵀ, L_i = U diag(√λ)
    return gz.detach(), root_t


def _capture(
    model: nn.Module,
    name: str,
    mod: nn.Linear,
    b: Batch,
    loss_fn: Callable,
    reduction: str | None,
    n: int,
    bias: bool,
    curvature: str,
) -> tuple[_Captured, str]:
    """One batch's inputs, per-sample roots B_iᵀ = L_iᵀJ_i, fit gradient and residual graph."""
    x, y, z = _forward_with_leaf(model, name, mod, b)
    reduction = reduction or detect_reduction(loss_fn, z.detach(), b.target)
    weight = b.size / n if reduction == "mean" else 1.0
    gz, root_t = _output_hessian_root(loss_fn, z, b, weight, model)
    if bias and mod.bias is not None:
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
    k, p = z.shape[1], y.shape[1]
    if not z.requires_grad:  # the output does not depend on the layer: every term is zero
        zero = torch.zeros(b.size, k, p, dtype=x.dtype, device=x.device)
        return _Captured(x, zero, torch.zeros(p, x.shape[1], dtype=x.dtype, device=x.device), None), reduction
    with torch.enable_grad():
        eye = torch.eye(k, dtype=z.dtype, device=z.device)
        jac = torch.stack(
            [torch.autograd.grad(z, y, eye[c].expand_as(z), retain_graph=True)[0] for c in range(k)], dim=1
        )  # (n_b, K, p): J_i
        _check_independent_samples(z, y, jac)
        (gy,) = torch.autograd.grad(z, y, gz, retain_graph=True, create_graph=curvature == "hessian")
    residual = _residual(y, gy) if curvature == "hessian" else None
    roots = torch.matmul(root_t, jac)  # L_iᵀ J_i
    return _Captured(x, roots.detach(), gy.detach().T @ x, residual), reduction


def _check_independent_samples(z: torch.Tensor, y: torch.Tensor, jac: torch.Tensor) -> None:
    """A random perturbation of the layer's output moves each sample's output by J_i v_i alone (no
    batch coupling: attention across samples, batch statistics)."""
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
    u = torch.zeros_like(z, requires_grad=True)
    (ju,) = torch.autograd.grad(z, y, u, retain_graph=True, create_graph=True)
    (zdot,) = torch.autograd.grad(ju, u, v, retain_graph=True)
    own = torch.einsum("ikp,ip->ik", jac, v)
    # coupling moves other samples' outputs by O(1) of the signal; the two evaluation orders differ
    # by rounding that ill-conditioned layers (a LayerNorm of tiny spread) amplify: a √eps threshold
    scale = max(float(torch.einsum("ikp,ip->ik", jac.abs(), v.abs()).max()), torch.finfo(z.dtype).tiny)
    if float((zdot - own).abs().max()) > torch.finfo(z.dtype).eps ** 0.5 * scale:
        raise NoStructure("the samples of a batch influence each other's outputs (a layer mixes the batch)")


def _residual(y: torch.Tensor, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(y, ∂(g·z)/∂y with its graph)`` when the residual term is not zero, else ``None``: its
    products with two random probes are exactly zero when every operation above is piecewise linear."""
    if not gy.requires_grad:
        return None
    gen = torch.Generator().manual_seed(3)
    with torch.enable_grad():
        for _ in range(2):
            probe = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
            (w,) = torch.autograd.grad(gy, y, probe, retain_graph=True, allow_unused=True)
            if w is not None and bool((w != 0).any()):
                return y, gy
    return None
