r"""The machinery shared by the drop-in operators of :mod:`fastdnc.curvature.generic`: reading the
batches, the live parameters, the cached gradient graphs and the ``torch.func`` product modes, the
fused path's switch, the snapshots that prove the caches (:mod:`.model_state`) and the guards
(:mod:`.admission`: batch statistics, random models, losses without second derivatives)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.func import grad, linearize, vmap

from .._memory import available_bytes, graph_budget, resident_bytes
from .._threads import intra_op_threads, threads_for
from ..batches import Batch, declared_reduction, detect_reduction, read_batches, tensors_of
from .admission import (
    MissingDerivativeError,
    NonDeterministicError,
    check_loss_deterministic,
    check_loss_value,
    check_parameters_reached,
    raise_clearly,
    refuse_batch_statistics,
    refuse_wrong_derivatives,
)
from .functional import autodiff_friendly_attention, frozen, substituted
from .fused import FusedSequential, why_not_fused
from .gram import GramOperator, SampleGram
from .layout import split_flat
from .model_state import BACKWARD_HOOKS, ModelSnapshot, hooks

MODES = ("auto", "linearize", "forward-over-reverse", "reverse-over-reverse")
# torch.func's refusal of an autograd.Function without setup_context (and of module backward hooks)
_FUNCTORCH_REFUSES = "autograd.Function with functorch transforms"


class ModuleOperator(GramOperator):
    """Shared machinery; subclasses define ``_batch_product(params, v, batch)`` on one batch."""

    curvature = "hessian"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        data,
        params: Sequence[torch.Tensor] | None,
        mode: str,
        check_deterministic: bool,
        fused: bool | None,
        reduction: str | None,
        batch_size_fn: Callable | None,
        num_data: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        named = dict(model.named_parameters())  # a tied parameter appears once
        if params is None:
            chosen = [(n, p) for n, p in named.items() if p.requires_grad]
        else:
            ids = {id(p): n for n, p in named.items()}
            missing = [i for i, p in enumerate(params) if id(p) not in ids]
            if missing:
                raise ValueError(f"params {missing} are not parameters of the model")
            if len({id(p) for p in params}) != len(params):
                raise ValueError("params lists a parameter twice")
            chosen = [(ids[id(p)], p) for p in params]
        if not chosen:
            raise ValueError("no parameters to differentiate")
        refuse_batch_statistics(model)
        ref = chosen[0][1]
        super().__init__(sum(p.numel() for _, p in chosen), ref.dtype, ref.device, [p.shape for _, p in chosen])
        self.model, self.loss_fn, self.mode = model, loss_fn, mode
        self.names = [n for n, _ in chosen]
        self._objects = None if params is None else [p for _, p in chosen]
        self.batches = read_batches(data, batch_size_fn)
        self.num_data = sum(b.size for b in self.batches) if num_data is None else int(num_data)
        if self.num_data <= 0:
            raise ValueError(f"num_data must be positive, got {num_data!r}")
        self.reduction = declared_reduction(loss_fn, reduction) or self._detect_reduction()
        self._fused: FusedSequential | None = None
        self._fused_snapshot: ModelSnapshot | None = None
        self._cache: list[Callable] | None = None
        self._cache_snapshot: ModelSnapshot | None = None
        # recompute each batch's graph per product instead of keeping it (set when the graphs would
        # not fit in memory; a user may set it to trade time for memory)
        self.recompute = False
        self._autograd_only = False  # torch.func cannot run the model (backward hooks, custom autograd.Functions)
        self._generic_checked = False
        with intra_op_threads(threads_for(self.gemm_flops())):  # the checks' passes, at the products' count
            self.fused_reason = "fused=False" if fused is False else why_not_fused(self, len(named))
            self.fused = self.fused_reason is None
            if self.fused:
                self._current_fused()
            if fused and self.fused_reason:
                raise ValueError(
                    f"the fused path cannot take this model: {self.fused_reason}; use fused=None (the exact "
                    "generic path) instead"
                )
            if not self.fused:
                self._check_generic()
            if check_deterministic:
                self._check_loss_deterministic()

    # ------------------------------------------------------------------ data and parameters
    def _weight(self, n_b: int) -> float:
        return n_b / self.num_data if self.reduction == "mean" else 1.0

    def live_parameters(self) -> dict[str, torch.Tensor]:
        """The parameters as they are now (detached views: in-place updates are seen)."""
        return {n: p.detach() for n, p in zip(self.names, self._live_objects())}

    def _live_objects(self) -> list[torch.Tensor]:
        if self._objects is not None:
            return self._objects
        current = dict(self.model.named_parameters())
        objects = [current.get(n) for n in self.names]
        changed = [n for n, p, s in zip(self.names, objects, self.block_shapes) if p is None or p.shape != s]
        if changed:
            raise ValueError(
                f"the model's parameters {changed} were removed or changed shape since the operator "
                "was built: build a new operator"
            )
        return objects

    def _on_device(self) -> Iterator[Batch]:
        for b in self.batches:
            yield b.to(self.device)

    def _output(self, params: dict[str, torch.Tensor], b: Batch):
        with substituted(self.model, params):
            return self.model(*b.args, **b.kwargs)

    def _apply_loss(self, z: torch.Tensor, y) -> torch.Tensor:
        if type(self.loss_fn) is nn.MSELoss:
            # the same loss written out: torch's mse_loss backward fails under jvp-of-grad with vmap
            # ("ZeroTensors are immutable"), the written-out form does not; like torch's, it broadcasts
            # a target of another shape, and says so as torch does
            if isinstance(y, torch.Tensor) and y.shape != z.shape:
                warnings.warn(
                    f"Using a target size ({tuple(y.shape)}) that is different to the input size "
                    f"({tuple(z.shape)}). This will likely lead to incorrect results due to broadcasting. "
                    "Please ensure they have the same size.",
                    UserWarning,
                    stacklevel=2,
                )
            sq = (z - y).square()
            return sq.mean() if self.reduction == "mean" else sq.sum()
        return self.loss_fn(z, y)

    def _loss(self, params: dict[str, torch.Tensor], b: Batch) -> torch.Tensor:
        return self._apply_loss(self._output(params, b), b.target)

    def _detect_reduction(self) -> str:
        b = next((b for b in self.batches if b.size >= 2), self.batches[0]).to(self.device)
        with torch.no_grad(), autodiff_friendly_attention():
            z = self._output(self.live_parameters(), b)
        return detect_reduction(self.loss_fn, z, b.target)

    # ------------------------------------------------------------------ products
    def gemm_flops(self, k: int = 1) -> float:
        """The largest parameter applied to the largest batch, per vector (a lower bound for
        convolutions, whose work is larger: enough to keep small models on one thread)."""
        largest = max(p.numel() for p in self.model.parameters())
        return 2.0 * largest * max(b.size for b in self.batches) * k

    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        if self.fused:
            fused = self._current_fused()
            if fused is not None:
                return fused.matmat(v)
        cached = self._cached_products()
        if cached is not None:
            return self._pulled_columns(cached, v)
        if self._autograd_only:
            return self._autograd_columns(v)
        params = self.live_parameters()
        total = None
        with autodiff_friendly_attention():
            for b in self._on_device():
                try:
                    cols = self._batch_columns(params, v, b)
                except NotImplementedError as e:  # before RuntimeError, its base class
                    if self.mode != "auto" or self.curvature == "ggn":
                        hint = ": use mode='reverse-over-reverse')" if self.mode != "auto" else ")"
                        raise MissingDerivativeError(
                            f"{e} (a layer or the loss has no forward-mode derivative in PyTorch{hint}"
                        ) from e
                    self.mode = "reverse-over-reverse"  # exact too: the same Hessian by double backward
                    cols = self._reverse_columns(params, v, b)
                except RuntimeError as e:
                    if _FUNCTORCH_REFUSES in str(e) and self.mode == "auto" and self.curvature == "hessian":
                        self._autograd_only = True  # a custom autograd.Function: autograd can run it
                        return self._autograd_columns(v)
                    raise_clearly(e, self.loss_fn)
                cols = cols * self._weight(b.size)
                total = cols if total is None else total + cols
        return total.detach()  # the parameters left out of ``params`` would otherwise carry a graph

    def _pulled_columns(self, pulls: Iterable[Callable], v: torch.Tensor) -> torch.Tensor:
        """Σ_b (n_b/N) H_b v from one backward pull per batch and column."""
        total = None
        with autodiff_friendly_attention():
            for pull, b in zip(pulls, self.batches):
                try:
                    cols = torch.stack([self._flatten(pull(self._split(v[:, j]))[0]) for j in range(v.shape[1])], 1)
                except RuntimeError as e:
                    raise_clearly(e, self.loss_fn)
                cols = cols * self._weight(b.size)
                total = cols if total is None else total + cols
        return total.detach()

    def _autograd_columns(self, v: torch.Tensor) -> torch.Tensor:
        """Autograd double backward without a kept cache: each batch's gradient graph is built, used
        for every column and dropped (for models that torch.func cannot transform)."""
        params = self.live_parameters()
        return self._pulled_columns((self._cached_backward(params, b) for b in self._on_device()), v)

    def _cached_products(self) -> list[Callable] | None:
        """Per batch, the backward of the gradient with its graph kept (``vjp`` of ``grad``): each
        product is one more backward pass, as autograd with a cached graph, but exact for the live
        parameters (rebuilt when one changes). ``None`` where it does not apply (the GGN, an explicit
        ``mode``) or would not fit: the graphs of all batches must stay under half the available memory."""
        if self.mode not in ("auto", "linearize") or self.curvature == "ggn" or self.recompute:
            return None
        if self._cache is not None and self._cache_snapshot is not None and self._unchanged(self._cache_snapshot):
            return self._cache
        self._cache, self._cache_snapshot = None, self._snapshot()
        params, pulls = self.live_parameters(), []
        before = resident_bytes(self.device)
        with autodiff_friendly_attention():
            for i, b in enumerate(self._on_device()):
                f = lambda p, b=b: self._loss(p, b)  # noqa: E731
                try:
                    if self.mode == "linearize":  # the traced jvp of the gradient: no forward pass per product
                        with frozen(self.model), warnings.catch_warnings():
                            # torch.fx's constant folding warns about its own get_attr nodes
                            warnings.filterwarnings("ignore", "Attempted to insert a get_attr Node", UserWarning)
                            linear = linearize(grad(f), params)[1]
                        pulls.append(lambda t, linear=linear: (self._runfrozen(linear, t),))
                    else:
                        pulls.append(self._cached_backward(params, b))
                except RuntimeError as e:
                    raise_clearly(e, self.loss_fn)
                if i == 0 and len(self.batches) > 1:
                    grown, have = resident_bytes(self.device) - before, available_bytes(self.device)
                    if have is not None and grown * len(self.batches) > have / 2:
                        self.recompute = True  # recompute per product instead
                        return None
        self._cache = pulls
        return pulls

    def release_cache(self) -> None:
        """Drop the kept per-batch graphs (the next product rebuilds them): frees their memory."""
        self._cache = self._cache_snapshot = None

    def _cached_backward(self, params: dict[str, torch.Tensor], b: Batch) -> Callable:
        """Autograd with a kept graph: the gradient of the loss at leaf copies of the parameters
        (sharing their storage) with ``create_graph=True``, and per product one backward through it."""
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
        what = f"the Hessian's autograd graph of a batch of {b.size:,} samples"
        with torch.enable_grad(), graph_budget(self.device, what, "smaller batches (they are summed exactly)"):
            g = torch.autograd.grad(
                self._loss(leaves, b), list(leaves.values()), create_graph=True, materialize_grads=True
            )
        live = [i for i, t in enumerate(g) if t.requires_grad]  # the others have zero second derivatives
        inputs = list(leaves.values())

        def pull(t: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor]]:
            if not live:
                return ({n: torch.zeros_like(x) for n, x in leaves.items()},)
            out = torch.autograd.grad(
                [g[i] for i in live],
                inputs,
                [t[self.names[i]] for i in live],
                retain_graph=True,
                materialize_grads=True,
            )
            return (dict(zip(self.names, out)),)

        return pull

    def _runfrozen(self, fn: Callable, t):
        with frozen(self.model):
            return fn(t)

    def _reverse_columns(self, params: dict[str, torch.Tensor], v: torch.Tensor, b: Batch) -> torch.Tensor:
        try:
            return self._batch_columns(params, v, b)
        except RuntimeError as e:
            raise_clearly(e, self.loss_fn)

    def _batch_columns(self, params: dict[str, torch.Tensor], v: torch.Tensor, b: Batch) -> torch.Tensor:
        # out_dims=0 (then transposed): vmap cannot expand an output that does not depend on the
        # vector (a zero GGN) along out_dims=1
        return vmap(
            lambda c: self._flatten(self._batch_product(params, self._split(c), b)), in_dims=1, randomness="same"
        )(v).T

    def _split(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, split_flat(v, self.block_shapes)))

    def _flatten(self, d: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([d[n].reshape(-1) for n in self.names])

    # ------------------------------------------------------------------ what the caches depend on
    def _data_tensors(self) -> list[torch.Tensor]:
        return [t for b in self.batches for t in tensors_of((b.args, b.kwargs, b.target))]

    def _snapshot(self) -> ModelSnapshot:
        """The model's structure and a copy of its parameters and buffers, and the data's versions
        (:mod:`~fastdnc.curvature.model_state`): what a cache was built from."""
        return ModelSnapshot(self.model, self._data_tensors())

    def _unchanged(self, snapshot: ModelSnapshot) -> bool:
        """Whether the model (hooks, code, every parameter and buffer bit for bit) and the data are
        as when ``snapshot`` was taken: ``.data`` edits and buffer updates are seen."""
        return snapshot.matches(self.model, self._data_tensors())

    # ------------------------------------------------------------------ fused nn.Sequential path
    def _current_fused(self) -> FusedSequential | None:
        """The fused R-op at the model's current state (rebuilt when anything changed), or ``None``
        after switching to the generic path because the model no longer fits it."""
        if self._fused is not None and self._fused_snapshot is not None and self._unchanged(self._fused_snapshot):
            return self._fused
        self._fused = self._fused_snapshot = None
        self._live_objects()  # a parameter removed or of another shape is an error, not a new model
        snapshot = self._snapshot()
        why = why_not_fused(self, len(dict(self.model.named_parameters())))
        fused = FusedSequential(self) if why is None else None
        why = why or fused.mismatch(self)
        if why:
            self.fused, self.fused_reason = False, why
            self._check_generic()
            return None
        self._fused, self._fused_snapshot = fused, snapshot
        return fused

    def gram_size(self) -> int | None:
        """The fused GGN of an ``nn.Sequential`` has a sample-space Gram (N·K'); other paths do not."""
        fused = self._current_fused() if self.fused and self.curvature == "ggn" else None
        return None if fused is None else fused.operator.gram_size()

    def why_no_gram(self) -> str:
        if self.curvature == "hessian":
            return "a Hessian (its residual term is not a Gram); GGNOperator has one"
        fused = self._current_fused() if self.fused else None
        if fused is None:
            return f"only the fused path has one, and it does not apply: {self.fused_reason}"
        return fused.operator.why_no_gram()

    def sample_gram(self, group: bool = True) -> SampleGram | None:
        if self.gram_size() is None:
            return None
        fused = self._current_fused()
        assert fused is not None
        gram = fused.operator.sample_gram(group)
        if gram is not None:
            gram.order = fused.order  # eigenvectors in the order of ``params``
        return gram

    # ------------------------------------------------------------------ checks
    def _check_generic(self) -> None:
        """What the generic path cannot take, refused by name (once; :mod:`.admission`): layers whose
        second derivative PyTorch gets wrong, hooks that only autograd runs under a mode that needs
        torch.func, parameters reached around the substitution, a loss that is not a finite scalar."""
        if self._generic_checked:
            return
        self._generic_checked = True
        refuse_wrong_derivatives(self.model, self.names)
        backward = hooks(self.model, BACKWARD_HOOKS)
        if backward:
            if self.mode != "auto" or self.curvature == "ggn":
                what = "the GGN" if self.curvature == "ggn" else f"mode={self.mode!r}"
                raise ValueError(
                    f"the model has backward hooks ({'; '.join(backward[:2])}): torch.func cannot run them, so "
                    f"{what} cannot be taken; use HessianOperator with mode='auto' (autograd double backward, "
                    "which runs them) or remove the hooks"
                )
            self._autograd_only = True
        b = self.batches[0].to(self.device)
        try:
            with autodiff_friendly_attention():
                check_parameters_reached(
                    self.names, self._live_objects(), lambda p: self._loss(p, b), self._check_loss_value
                )
        except RuntimeError as e:
            raise_clearly(e, self.loss_fn)

    def _check_loss_value(self, loss: object) -> None:
        check_loss_value(loss, self.model, self._data_tensors())

    def _check_loss_deterministic(self) -> None:
        b, params = self.batches[0].to(self.device), self.live_parameters()
        with torch.no_grad(), autodiff_friendly_attention():
            check_loss_deterministic(lambda: self._loss(params, b), self._check_loss_value, self.dtype)

    def check_deterministic(self, rtol: float = 1e-5, atol: float = 1e-8) -> None:
        """Two full products with one random vector must agree (else NonDeterministicError)."""
        v = torch.randn(self.size, 1, generator=torch.Generator().manual_seed(0), dtype=self.dtype).to(self.device)
        fused, recompute = self.fused, self.recompute
        self.fused, self.recompute = False, True  # recompute: a cached graph would repeat itself
        try:
            a, b = self._matmat(v), self._matmat(v)
        finally:
            self.fused, self.recompute = fused, recompute
        if not torch.allclose(a, b, rtol=rtol, atol=atol):
            raise NonDeterministicError(
                f"two passes over the data gave products differing by {float((a - b).abs().max()):.3e}: the model is "
                "random (dropout, ...); use eval mode"
            )
