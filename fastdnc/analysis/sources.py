r"""Where an analysis gets its layers from: one small protocol, three providers.

A :class:`LayerSource` gives, for each analysed linear layer i (0-based, in the order the data flows
through them): the exact fit-term layer Hessian, the class means of the layer's input
:math:`\mu^{(l)}` and of what the next layer sees :math:`\mu^{(l+1)}` (the output Z for the last),
the fit-term gradient of its weight, the NC metrics of its input; and for the whole model the
Hessian and the gradient. The analysis (:mod:`fastdnc.analysis.analyze`) asks nothing else, so:

* :class:`ModuleSource` puts **any** ``nn.Module`` classifier through the lens (forward hooks on its
  layers, :func:`fastdnc.curvature.module_layer.module_layer_hessian`);
* :class:`LayeredSource` does the same for :class:`~fastdnc.models.DeepUFM` and
  :class:`~fastdnc.models.MLPHead` (their structured operators);
* :class:`ShardedSource` is a LayeredSource whose samples are sharded over a process group (the
  operators and reductions of :mod:`fastdnc.distributed`): it is passed in, not swapped in by name.

Conventions (docs/theory.md §2, §5): the pairs :math:`v_{cc'} = \mu_c^{(l+1)} \otimes \mu_{c'}^{(l)}` with
the row-major vec of the weight; means are uncentred class means of the current features
(post-activation inputs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from .. import distributed
from .._memory import available_bytes, resident_bytes
from ..batches import Batch, read_batches
from ..capture import ACTIVATIONS, call_order, trailing_linear_head
from ..collapse import FeatureStatistics, module_feature_statistics, streaming_feature_metrics
from ..curvature import oracles
from ..curvature.full import hessian
from ..curvature.generic import HessianOperator
from ..curvature.layer import layer_hessian
from ..curvature.module_layer import ModuleLayerHessian, batches_as_data, module_layer_hessian, resolve_layer
from ..curvature.operator import CurvatureOperator
from ..models import LayeredModel


class LayerSource(Protocol):
    """What an analysis reads from a model (see the module docstring)."""

    names: list[str]
    num_classes: int
    num_samples: int
    loss: str | None  # "mse", "ce" or None (another loss: no DNC prediction)
    description: str

    def activation(self, i: int) -> str | None: ...
    def is_last(self, i: int) -> bool: ...
    def hessian(self, i: int) -> CurvatureOperator: ...
    def class_means(self, i: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def gradient(self, i: int) -> torch.Tensor: ...
    def input_metrics(self, i: int) -> dict: ...
    def output_metrics(self) -> dict: ...
    def full_hessian(self) -> CurvatureOperator: ...
    def full_gradient(self) -> torch.Tensor: ...


def loss_kind(loss_fn: Callable) -> str | None:
    """``"mse"`` / ``"ce"`` for the losses the DNC theory covers (torch's MSE and cross-entropy, also
    NLL after a LogSoftmax), else ``None``."""
    if isinstance(loss_fn, nn.MSELoss):
        return "mse"
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return "ce"
    return None


class LayeredSource:
    """A :class:`~fastdnc.models.DeepUFM` or :class:`~fastdnc.models.MLPHead` (all its layers). The
    whole model's Hessian is that of the training objective (fit + weight decay, docs/theory.md §3.5;
    ``decay=False``: the fit term), over the weights (and H_1 with ``include_features``)."""

    def __init__(self, model: LayeredModel, decay: bool = True, include_features: bool = False) -> None:
        model.check()
        self.model, self.decay, self.include_features = model, decay, include_features
        self.names = [f"W_{l}" for l in range(1, model.depth + 1)]
        self.num_classes = model.num_classes
        self.loss: str | None = model.loss_type
        self.num_samples = model.num_samples
        self.description = f"{type(model).__name__} ({model.extra_repr()})"
        self._metrics: list[dict] | None = None

    def activation(self, i: int) -> str | None:
        return self.model.activation

    def is_last(self, i: int) -> bool:
        return i == self.model.depth - 1

    def hessian(self, i: int) -> CurvatureOperator:
        return layer_hessian(self.model, i + 1)

    def class_means(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.class_means(i + 2), self.model.class_means(i + 1)

    def gradient(self, i: int) -> torch.Tensor:
        grads = self.model.loss_and_gradients(decay=False).gradients
        return grads[i * (2 if self.model.biases is not None else 1)]

    def _all_metrics(self) -> list[dict]:
        if self._metrics is None:
            st = self.model.states()
            pred = st.output.argmax(0)
            feats = [*st.inputs, st.output]
            self._metrics = [
                streaming_feature_metrics(
                    lambda h=h, p=p: [(h, self.model.labels, pred, p)], self.num_classes, reduce=self._reduce
                )
                for h, p in zip(feats, st.preactivations)
            ]
        return self._metrics

    @staticmethod
    def _reduce(t: torch.Tensor, what: str = "") -> torch.Tensor:
        return t

    def input_metrics(self, i: int) -> dict:
        return self._all_metrics()[i]

    def output_metrics(self) -> dict:
        return self._all_metrics()[-1]

    def full_hessian(self) -> CurvatureOperator:
        return hessian(self.model, include_features=self.include_features, decay=self.decay)

    def full_gradient(self) -> torch.Tensor:
        return oracles.fit_gradient(self.model, include_features=self.include_features)


class ShardedSource(LayeredSource):
    """A LayeredSource holding this rank's shard of the samples: every quantity is over all ranks'
    samples (sharded operators, reduced class means, gradients and NC statistics)."""

    _reduce = staticmethod(distributed.all_reduce_)  # type: ignore[assignment]

    def __init__(self, model: LayeredModel, decay: bool = True, include_features: bool = False) -> None:
        if include_features:
            raise ValueError("include_features is not sharded: every rank holds only its columns of H_1")
        super().__init__(model, decay)
        self.num_samples = distributed.global_count(model.num_samples)

    def hessian(self, i: int) -> CurvatureOperator:
        return distributed.sharded_layer_hessian(self.model, i + 1)

    def class_means(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return distributed.global_class_means(self.model, i + 2), distributed.global_class_means(self.model, i + 1)

    def gradient(self, i: int) -> torch.Tensor:
        return distributed.sharded_layer_fit_gradient(self.model, i + 1)

    def full_hessian(self) -> CurvatureOperator:
        return distributed.sharded_hessian(self.model, decay=self.decay)

    def full_gradient(self) -> torch.Tensor:
        return distributed.sharded_fit_gradient(self.model)


# The traced product's memory over the kept graphs' (5-6 on a ResNet-20 and a small ViT, measured as
# resident growth of their first product), with a margin.
TRACED_OVER_GRAPHS = 8


class ModuleSource:
    """Any ``nn.Module`` classifier on its data and loss, through hooks on its linear ``layers``
    (default: the trailing linear head, :func:`fastdnc.capture.trailing_linear_head`). The model is
    read in evaluation mode (``model.eval()``; restored by :func:`fastdnc.analysis.analyze`)."""

    def __init__(
        self, model: nn.Module, data, loss_fn: Callable, layers: Sequence[nn.Module | str] | None = None
    ) -> None:
        if isinstance(model, LayeredModel):
            raise TypeError(f"a {type(model).__name__} holds its data: use LayeredSource(model) / fd.analyze(model)")
        self.model, self.loss_fn = model, loss_fn
        self.batches: list[Batch] = read_batches(data)
        first = self.batches[0]
        self.names = (
            trailing_linear_head(model, first.args, first.kwargs)
            if layers is None
            else [resolve_layer(model, layer)[0] for layer in layers]
        )
        mods = dict(model.named_modules())
        bad = [n for n in self.names if not isinstance(mods[n], nn.Linear)]
        if bad:
            raise ValueError(
                f"the DNC lens analyses nn.Linear layers; {bad} are not (their Hessians: fd.HessianOperator)"
            )
        with torch.no_grad():
            out = model(*first.args, **first.kwargs)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ValueError("the model's output is not (N, K) class scores: the DNC lens needs a classifier")
        self.num_classes, self.loss = int(out.shape[1]), loss_kind(loss_fn)
        self.num_samples = sum(b.size for b in self.batches)
        self.description = f"{type(model).__name__}, layers {self.names}"
        self._order = call_order(model, first.args, first.kwargs)
        captures = [(n, w) for n in self.names for w in ("input", "output")]
        self._stats: list[FeatureStatistics] = module_feature_statistics(
            model, self.batches, captures, self.num_classes
        )
        self._ops: dict[int, ModuleLayerHessian] = {}

    def _stat(self, i: int, where: str) -> FeatureStatistics:
        return self._stats[2 * i + (0 if where == "input" else 1)]

    def _between(self, i: int) -> list[nn.Module]:
        """The leaf modules called between layer i and the next analysed layer (or the model's end)."""
        mods = dict(self.model.named_modules())
        start = self._order.index(self.names[i]) + 1
        end = self._order.index(self.names[i + 1]) if i + 1 < len(self.names) else len(self._order)
        return [mods[n] for n in self._order[start:end]]

    def _adjacent(self, i: int) -> bool:
        """Whether layer i+1 reads layer i's output through activations only (so μ^{(l+1)} is its input)."""
        if i + 1 >= len(self.names):
            return False
        nxt, own = self._stat(i + 1, "input").means, self._stat(i, "output").means
        dims = nxt is not None and own is not None and nxt.shape[0] == own.shape[0]
        return dims and all(isinstance(m, ACTIVATIONS) for m in self._between(i))

    def activation(self, i: int) -> str | None:
        """The activation the theory's table needs (docs/theory.md §3.8): ``None`` when a module other than
        ReLU / LeakyReLU / identity / dropout follows the layer (GELU, LayerNorm, …: no prediction),
        ``"relu"`` when ReLUs follow it or, where nothing visible does (a functional activation, the
        last layer), when the features it acts on are non-negative, else ``"linear"``."""
        ignore = (nn.Identity, nn.Dropout) + ((nn.LogSoftmax, nn.Softmax) if self.is_last(i) else ())
        after = [m for m in self._between(i) if not isinstance(m, ignore)]
        if any(not isinstance(m, (nn.ReLU, nn.LeakyReLU)) for m in after):
            return None
        if after:
            return "relu"
        features = self._stat(i + 1, "input") if self._adjacent(i) else self._stat(i, "input")
        return "relu" if features.nonnegative() else "linear"

    def is_last(self, i: int) -> bool:
        means = self._stat(i, "output").means
        return i == len(self.names) - 1 and means is not None and means.shape[0] == self.num_classes

    def hessian(self, i: int) -> ModuleLayerHessian:
        if i not in self._ops:
            self._ops[i] = module_layer_hessian(self.model, self.names[i], batches_as_data(self.batches), self.loss_fn)
        return self._ops[i]

    def _weight(self, i: int) -> torch.Tensor:
        weight = self.model.get_submodule(self.names[i]).weight
        assert isinstance(weight, torch.Tensor)
        return weight

    def class_means(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self._weight(i).dtype
        out = self._stat(i + 1, "input") if self._adjacent(i) else self._stat(i, "output")
        assert out.means is not None and self._stat(i, "input").means is not None
        return out.means.to(dtype), self._stat(i, "input").means.to(dtype)

    def gradient(self, i: int) -> torch.Tensor:
        op = self.hessian(i)
        if op.fit_gradient is not None:
            return op.fit_gradient
        return _gradient(self.model, self.loss_fn, self.batches, [self._weight(i)])[0]

    def input_metrics(self, i: int) -> dict:
        return self._stat(i, "input").metrics(_keep)

    def output_metrics(self) -> dict:
        return self._stats[-1].metrics(_keep)

    def full_hessian(self) -> CurvatureOperator:
        """The whole model's Hessian on the faster of the generic path's two cached modes, timed on one
        product each: the kept gradient graphs (one backward per product) or the traced Jacobian-vector
        product of the gradient (``mode="linearize"``, about twice as fast on convolutional models,
        slower on attention); the fused path where it applies."""
        data = batches_as_data(self.batches)
        auto = HessianOperator(self.model, self.loss_fn, data)
        if auto.fused:
            return auto
        probe = torch.randn(auto.size, 2, generator=torch.Generator().manual_seed(0), dtype=auto.dtype).to(auto.device)
        before = resident_bytes(auto.device)
        seconds = _time_product(auto, probe)
        graphs = resident_bytes(auto.device) - before
        auto.release_cache()  # one set of graphs alive at a time
        have = available_bytes(auto.device)
        if have is not None and TRACED_OVER_GRAPHS * graphs > have / 2:  # the traced product would not fit
            return auto
        try:
            traced = HessianOperator(self.model, self.loss_fn, data, mode="linearize", check_deterministic=False)
            faster = _time_product(traced, probe) < seconds
        except (RuntimeError, NotImplementedError):  # a layer torch.func cannot trace: the kept graphs
            return auto
        return traced if faster else auto

    def full_gradient(self) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.cat([g.reshape(-1) for g in _gradient(self.model, self.loss_fn, self.batches, params)])


def _time_product(op: CurvatureOperator, v: torch.Tensor) -> float:
    """Seconds of one product after a first one (which builds the operator's cache)."""
    op @ v
    t0 = time.perf_counter()
    op @ v
    return time.perf_counter() - t0


def _keep(t: torch.Tensor, what: str = "") -> torch.Tensor:
    return t


def _gradient(
    model: nn.Module, loss_fn: Callable, batches: list[Batch], params: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """The gradient of the size-weighted mean loss over the batches (as the operators define it)."""
    n = sum(b.size for b in batches)
    reduction = getattr(loss_fn, "reduction", "mean")
    total = [torch.zeros_like(p) for p in params]
    for b in batches:
        with torch.enable_grad():
            loss = loss_fn(model(*b.args, **b.kwargs), b.target) * (b.size / n if reduction == "mean" else 1.0)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        total = [t if g is None else t + g for t, g in zip(total, grads)]
    return [t.detach() for t in total]
