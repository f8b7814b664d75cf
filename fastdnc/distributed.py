r"""Data-parallel curvature on ``torch.distributed`` (gloo on CPU, NCCL on GPU): no home-made engine.

Every rank holds a shard of the data (or of a UFM's columns, :func:`shard_model`) and builds the
usual operator on it; the curvature of the mean loss over all N samples is then

.. math:: \mathcal H = \sum_r \frac{n_r}{N}\,\mathcal H_r \quad(\text{unequal shards allowed}),

because every fit term is a mean over samples (a ``reduction="sum"`` loss uses weight 1). The decay
terms are identical on every rank and their weights add up to 1, so they are counted once.

* :class:`ShardedOperator`: any local operator; each product is the local product times
  :math:`n_r/N`, then one ``all_reduce`` of the (P × k) result: O(P) floats per vector.
* :func:`sharded_layer_hessian`: for linear MSE layers the Kronecker **input factor** (the Gram
  :math:`H_lH_l^\top/N`, q × q) is reduced once and products are local: no communication per
  product and never a P × P matrix. Other layers are :class:`ShardedOperator` s.
* :func:`sharded_hessian` / ``ggn``: for deep linear MSE models the cached :math:`S = H_1H_1^\top/N`
  and :math:`MB_l^\top` (d × d and K × d) are reduced once, then every product is local; ReLU and
  CE models reduce each product.

Spectral methods (:func:`~fastdnc.lanczos`, :func:`~fastdnc.spectral_density`, the trace
estimators) need no change: **every rank runs them in lockstep** with the same seeded random
streams, the all-reduced products are bitwise identical on every rank, and so are the results.
For a fixed world size the reductions are deterministic (gloo's ring order is fixed), so runs are
bitwise reproducible.

A rank that dies or hangs makes the collective fail on the others after the process group's
timeout (:func:`init`), raised as :class:`DistributedError` naming the rank and the operation;
nothing waits forever.
"""

from __future__ import annotations

import torch

from ._comm import (
    DistributedError,
    agree,
    all_reduce_,
    global_count,
    init,
    initialized,
    rank,
    world_size,
)
from .curvature.full import LinearMSEHessian, ggn, hessian
from .curvature.kronecker import Factor, KroneckerOperator
from .curvature.layer import layer_hessian
from .curvature.operator import CurvatureOperator, renamed_ggn_flag
from .models import LayeredModel, MLPHead

__all__ = [
    "DistributedError",
    "ShardedOperator",
    "agree",
    "all_reduce_",
    "global_count",
    "global_class_means",
    "init",
    "initialized",
    "rank",
    "shard_indices",
    "shard_model",
    "sharded",
    "sharded_fit_gradient",
    "sharded_hessian",
    "sharded_layer_fit_gradient",
    "sharded_layer_hessian",
    "world_size",
]


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> torch.Tensor:
    """Contiguous, near-equal shard ``rank_`` of range(n) over ``world`` ranks (class order kept)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return torch.tensor_split(torch.arange(n), world)[rank_]


def shard_model(model: LayeredModel, indices: torch.Tensor | None = None) -> MLPHead:
    """The same weights on a shard of the samples (the columns ``indices`` of H_1 or of the head's
    inputs; default: this rank's :func:`shard_indices`), as an :class:`MLPHead`. Its weight
    Hessians are the shard's; the features are data here (include_features is not sharded)."""
    idx = shard_indices(model.num_samples) if indices is None else indices
    if idx.numel() == 0:
        raise ValueError(f"rank {rank()} received no samples: more ranks ({world_size()}) than samples?")
    widths = [w.shape[0] for w in model.weights[:-1]]
    head = MLPHead(
        model.features.detach()[:, idx].contiguous(),
        model.labels[idx],
        widths,
        model.depth,
        num_classes=model.num_classes,
        activation=model.activation,
        loss=model.loss_type,
        weight_decay=model.weight_decay,
        bias=model.biases is not None,
    )
    with torch.no_grad():
        for dst, src in zip(head.parameters(), [p for n, p in model.named_parameters() if n != "_features"]):
            dst.copy_(src)
    return head


def _no_features(include_features: bool) -> None:
    if include_features:
        raise ValueError("include_features is not sharded: every rank holds only its columns of H_1")


def sharded_fit_gradient(model: LayeredModel, include_features: bool = False) -> torch.Tensor:
    """The flat fit-term gradient of the weights over all ranks' samples (Σ_r n_r/N g̃_r)."""
    _no_features(include_features)
    grads = model.loss_and_gradients(decay=False).gradients
    flat = torch.cat([g.reshape(-1) for g in grads[: len(grads) - int(model.features_trainable)]])
    return all_reduce_(flat * _weight(model.num_samples), "reducing the fit gradient")


@torch.no_grad()
def global_class_means(model: LayeredModel, layer: int) -> torch.Tensor:
    """Class means (d × K) of the input of ``layer`` (L+1: the output) over every rank's samples."""
    st = model.states()
    h = st.output if layer == model.depth + 1 else st.inputs[layer - 1]
    sums = all_reduce_((h @ model.targets.T).to(torch.float64), "reducing class sums")
    counts = all_reduce_(model.targets.sum(1).to(torch.float64), "reducing class counts")
    return (sums / counts).to(h.dtype)


def sharded_layer_fit_gradient(model: LayeredModel, layer: int) -> torch.Tensor:
    """The fit-term gradient of W_layer over every rank's samples."""
    g = model.loss_and_gradients(decay=False).gradients[(layer - 1) * (2 if model.biases is not None else 1)]
    return all_reduce_(g * _weight(model.num_samples), "reducing a layer gradient")


class ShardedOperator(CurvatureOperator):
    """``weight`` × the local operator, summed over ranks by one all_reduce per product."""

    def __init__(self, local: CurvatureOperator, weight: float) -> None:
        super().__init__(local.size, local.dtype, local.device, local.block_shapes)
        self.local, self.weight = local, float(weight)
        self.symmetric, self.curvature = local.symmetric, local.curvature

    def gemm_flops(self, k: int = 1) -> float:
        return self.local.gemm_flops(k)

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        out = self.local.matmat(v) * self.weight
        return all_reduce_(out.contiguous(), f"product of {type(self.local).__name__}")

    def to_dense(self, chunk: int = 1024) -> torch.Tensor:
        """The local explicit matrix (its fastest assembly, e.g. the packed Gauss–Newton kernel), weighted
        and reduced once: P² floats, the size of the result itself."""
        return all_reduce_(self.local.to_dense() * self.weight, "reducing an explicit block")

    def cache_info(self) -> dict[str, str]:
        return {f"local.{k}": v for k, v in self.local.cache_info().items()}


def _weight(num_local: int) -> float:
    return num_local / global_count(num_local)


def sharded(op: CurvatureOperator, num_local: int | None = None) -> CurvatureOperator:
    """Any operator of this rank's mean loss, made global (``num_local`` samples here; for
    :class:`~fastdnc.HessianOperator` / ``GGNOperator`` it is read from the operator)."""
    if num_local is None:
        num_local = getattr(op, "num_data", None)
        if num_local is None:
            raise ValueError("pass num_local: the operator does not know its number of samples")
        if getattr(op, "reduction", "mean") == "sum":
            global_count(num_local)  # keep the collectives in step on every rank
            return ShardedOperator(op, 1.0)
    return ShardedOperator(op, _weight(num_local))


def sharded_layer_hessian(model: LayeredModel, layer: int, decay: bool = False, **kw) -> CurvatureOperator:
    """The layer Hessian of the mean loss over every rank's shard of ``model``'s samples."""
    local = layer_hessian(model, layer, decay=decay, **kw)
    w = _weight(model.num_samples)
    if isinstance(local, KroneckerOperator):
        # (AᵀA) ⊗ (Σ_r w_r X_rX_rᵀ/n_r): reduce the q × q input Gram once
        gram = all_reduce_(local.input_factor.to_dense() * w, "reducing the input Gram")
        return KroneckerOperator(
            local.output_factor, Factor.dense(gram), scale=local.scale, shift=local.shift, backend=local.backend
        )
    return ShardedOperator(local, w)


def sharded_hessian(
    model: LayeredModel,
    include_features: bool = False,
    decay: bool = True,
    *,
    curvature: str = "hessian",
    gauss_newton: bool | None = None,
) -> CurvatureOperator:
    """The full weight Hessian (``curvature="ggn"``: the GGN) of the mean loss over every rank's
    shard; ``gauss_newton=True`` is the deprecated former name of ``curvature="ggn"``."""
    _no_features(include_features)
    build = ggn if renamed_ggn_flag(curvature, gauss_newton, "gauss_newton") == "ggn" else hessian
    local = build(model, include_features=False, decay=decay)
    w = _weight(model.num_samples)
    if isinstance(local, LinearMSEHessian):
        # everything a product reads from the samples: S = H_1H_1ᵀ/N and M B_lᵀ (d × d, K × d)
        local.reduce_sample_statistics(lambda t, name: all_reduce_(t * w, f"reducing {name}"))
        return local
    return ShardedOperator(local, w)
