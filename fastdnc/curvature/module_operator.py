r"""The machinery shared by the drop-in operators of :mod:`fastdnc.curvature.generic`: reading the
batches, the live parameters, the cached gradient graphs and the ``torch.func`` product modes, the
fused path's switch, and the guards (batch statistics, random models, losses without second
derivatives)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import grad, linearize, vmap

from .._memory import available_bytes, resident_bytes
from .batches import Batch, declared_reduction, detect_reduction, read_batches
from .functional import autodiff_friendly_attention, frozen, substituted
from .fused import FusedSequential
from .fused import obstacle as fused_obstacle
from .gram import SampleGram
from .layout import split_flat
from .operator import CurvatureOperator

MODES = ("auto", "linearize", "forward-over-reverse", "reverse-over-reverse")


class NonDeterministicError(RuntimeError):
    """Two evaluations on the same data gave different results."""


class MissingDerivativeError(NotImplementedError):
    """PyTorch has no (forward-mode, or second) derivative of a layer or loss of the model."""


def _raise_clearly(e: RuntimeError, loss_fn: Callable) -> None:
    """Re-raise PyTorch's "derivative for aten::…_backward is not implemented" as a clear
    NotImplementedError naming the loss or the layers; any other error unchanged."""
    text = str(e)
    if "derivative for" not in text or "is not implemented" not in text:
        raise e
    what = type(loss_fn).__name__ if "loss" in text.split("is not implemented")[0] else "a layer of this model"
    raise MissingDerivativeError(
        f"PyTorch cannot differentiate {what} twice ({text.splitlines()[0]}): there is no Hessian to take through it"
    ) from e


def _refuse_batch_statistics(model: nn.Module) -> None:
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and (mod.training or not mod.track_running_stats):
            why = "is in training mode" if mod.training else "has track_running_stats=False"
            raise ValueError(
                f"{type(mod).__name__} {name or '(the model)'!r} {why}: it normalises with the "
                "statistics of each batch, so the loss of a sample depends on the rest of its batch (the "
                "Hessian then depends on how the data is batched) and every product would update its "
                "running statistics; call model.eval() to use the running statistics"
            )


class ModuleOperator(CurvatureOperator):
    """Shared machinery; subclasses define ``_batch_product(params, v, batch)`` on one batch."""

    is_ggn = False

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
        _refuse_batch_statistics(model)
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
        self._fused_key: tuple = ()
        self.fused_reason = "fused=False" if fused is False else fused_obstacle(self, len(named), self.is_ggn)
        if fused and self.fused_reason:
            raise ValueError(
                f"the fused path cannot take this model: {self.fused_reason}; use fused=None (the exact "
                "generic path) instead"
            )
        self.fused = self.fused_reason is None
        self._cache: list[Callable] | None = None
        self._cache_key: tuple = ()
        self._cache_refused = False
        if self.fused:
            self._fused, self._fused_key = FusedSequential(self), self._state_key()
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
    def _matmat(self, v: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._fused_matmat(v)
        cached = self._cached_products()
        if cached is not None:
            total = None
            with autodiff_friendly_attention():
                for pull, b in zip(cached, self.batches):
                    try:
                        cols = torch.stack([self._flatten(pull(self._split(v[:, j]))[0]) for j in range(v.shape[1])], 1)
                    except RuntimeError as e:
                        _raise_clearly(e, self.loss_fn)
                    cols = cols * self._weight(b.size)
                    total = cols if total is None else total + cols
            return total.detach()
        params = self.live_parameters()
        total = None
        with autodiff_friendly_attention():
            for b in self._on_device():
                try:
                    cols = self._batch_columns(params, v, b)
                except NotImplementedError as e:  # before RuntimeError, its base class
                    if self.mode != "auto" or self.is_ggn:
                        hint = ": use mode='reverse-over-reverse')" if self.mode != "auto" else ")"
                        raise MissingDerivativeError(
                            f"{e} (a layer or the loss has no forward-mode derivative in PyTorch{hint}"
                        ) from e
                    self.mode = "reverse-over-reverse"  # exact too: the same Hessian by double backward
                    cols = self._reverse_columns(params, v, b)
                except RuntimeError as e:
                    _raise_clearly(e, self.loss_fn)
                cols = cols * self._weight(b.size)
                total = cols if total is None else total + cols
        return total.detach()  # the parameters left out of ``params`` would otherwise carry a graph

    def _cached_products(self) -> list[Callable] | None:
        """Per batch, the backward of the gradient with its graph kept (``vjp`` of ``grad``): each
        product is one more backward pass, as autograd with a cached graph, but exact for the live
        parameters (rebuilt when one changes). ``None`` where it does not apply (the GGN, an explicit
        ``mode``) or would not fit: the graphs of all batches must stay under half the available memory."""
        if self.mode not in ("auto", "linearize") or self.is_ggn or self._cache_refused:
            return None
        key = self._state_key()
        if self._cache is not None and self._cache_key == key:
            return self._cache
        self._cache, self._cache_key = None, key
        params, pulls = self.live_parameters(), []
        before = resident_bytes(self.device)
        with autodiff_friendly_attention():
            for i, b in enumerate(self._on_device()):
                f = lambda p, b=b: self._loss(p, b)  # noqa: E731
                try:
                    if self.mode == "linearize":  # the traced jvp of the gradient: no forward pass per product
                        with frozen(self.model):
                            linear = linearize(grad(f), params)[1]
                        pulls.append(lambda t, linear=linear: (self._runfrozen(linear, t),))
                    else:
                        pulls.append(self._cached_backward(params, b))
                except RuntimeError as e:
                    _raise_clearly(e, self.loss_fn)
                if i == 0 and len(self.batches) > 1:
                    grown, have = resident_bytes(self.device) - before, available_bytes(self.device)
                    if have is not None and grown * len(self.batches) > have / 2:
                        self._cache_refused = True  # recompute per product instead
                        return None
        self._cache = pulls
        return pulls

    def _cached_backward(self, params: dict[str, torch.Tensor], b: Batch) -> Callable:
        """Autograd with a kept graph: the gradient of the loss at leaf copies of the parameters
        (sharing their storage) with ``create_graph=True``, and per product one backward through it."""
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
        with torch.enable_grad():
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
            _raise_clearly(e, self.loss_fn)

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

    # ------------------------------------------------------------------ fused nn.Sequential path
    def _state_key(self) -> tuple:
        return tuple((id(p), p._version, p.data_ptr()) for p in self._live_objects())

    def _current_fused(self) -> FusedSequential:
        key = self._state_key()
        if self._fused is None or key != self._fused_key:  # an optimiser step, a load_state_dict, a new Parameter
            self._fused, self._fused_key = FusedSequential(self), key
        return self._fused

    def _fused_matmat(self, v: torch.Tensor) -> torch.Tensor:
        return self._current_fused().matmat(v)

    def gram_size(self) -> int | None:
        """The fused GGN of an ``nn.Sequential`` has a sample-space Gram (N·K'); other paths do not."""
        return self._current_fused().operator.gram_size() if self.fused and self.is_ggn else None

    def gram_obstacle(self) -> str:
        if not self.is_ggn:
            return "a Hessian (its residual term is not a Gram); GGNOperator has one"
        if not self.fused:
            return f"only the fused path has one, and it does not apply: {self.fused_reason}"
        return self._current_fused().operator.gram_obstacle()

    def sample_gram(self, group: bool = True) -> SampleGram | None:
        if self.gram_size() is None:
            return None
        fused = self._current_fused()
        gram = fused.operator.sample_gram(group)
        if gram is not None:
            gram.order = fused.order  # eigenvectors in the order of ``params``
        return gram

    # ------------------------------------------------------------------ checks
    def _check_loss_deterministic(self) -> None:
        b = self.batches[0].to(self.device)
        params = self.live_parameters()
        with torch.no_grad(), autodiff_friendly_attention():
            first, second = float(self._loss(params, b)), float(self._loss(params, b))
        tol = 100 * torch.finfo(self.dtype).eps * max(abs(first), abs(second))
        if not abs(first - second) <= tol:
            raise NonDeterministicError(
                f"two evaluations of the loss on the same batch gave {first:.10g} and {second:.10g}: the model or "
                "the loss is random (dropout in training mode, random layers, ...); call model.eval() or pass "
                "check_deterministic=False if that is intended"
            )

    def check_deterministic(self, rtol: float = 1e-5, atol: float = 1e-8) -> None:
        """Two full products with one random vector must agree (else NonDeterministicError)."""
        v = torch.randn(self.size, 1, generator=torch.Generator().manual_seed(0), dtype=self.dtype).to(self.device)
        fused, refused = self.fused, self._cache_refused
        self.fused, self._cache_refused = False, True  # recompute: a cached graph would repeat itself
        try:
            a, b = self._matmat(v), self._matmat(v)
        finally:
            self.fused, self._cache_refused = fused, refused
        if not torch.allclose(a, b, rtol=rtol, atol=atol):
            raise NonDeterministicError(
                f"two passes over the data gave products differing by {float((a - b).abs().max()):.3e}: the model is "
                "random (dropout, ...); use eval mode"
            )
