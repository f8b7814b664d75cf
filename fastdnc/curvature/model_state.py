r"""What a module computes besides its class's code and its registered tensors, and a snapshot that
proves a cache still describes the same function.

The drop-in operators keep state between products: the fused R-op copies the weights and caches the
forward pass, the generic path keeps each batch's gradient graph. Such a cache is exact only while
the model computes the same function, and PyTorch offers many ways to change that function without
touching a parameter's version counter:

* **hooks**: forward and forward-pre hooks (with or without kwargs), backward and backward-pre hooks
  of a module, the global module hooks of ``torch.nn.modules.module``, and gradient hooks on a
  parameter (:func:`hooks`);
* **re-parametrisations**: ``torch.nn.utils.parametrize`` (``parametrizations.weight_norm``,
  ``orthogonal``, …) and the forward-pre-hook ones (``torch.nn.utils.prune``, the old
  ``torch.nn.utils.weight_norm``), which :func:`hooks` reports too;
* **code**: an instance ``forward`` (``mod.forward = …``) or a class ``forward`` patched at run time
  (:func:`foreign_forward`);
* **data**: ``p.data.mul_(…)`` and ``p.data = …`` change a parameter without bumping
  ``p._version``; buffers change the same way.

:class:`ModelSnapshot` records the structure (every module's identity, class, mode, hooks and
``forward``; every parameter's and buffer's identity, shape, dtype and device; the global hooks) and
a **copy of every parameter and buffer**. :meth:`ModelSnapshot.matches` compares the structure and
every tensor bit for bit (``torch.equal`` on the bits, so NaN equals NaN): nothing that changes what
the model computes gets past it. Its cost is one extra copy of the parameters and buffers in memory
and one memory-bound comparison of them per product (``benchmarks/bench_zoo.py`` measures it
against the product; the "Cache check" rows of docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

# the dicts of torch.nn.Module that hold hooks changing a forward or backward pass
FORWARD_HOOKS = ("_forward_pre_hooks", "_forward_hooks")
BACKWARD_HOOKS = ("_backward_pre_hooks", "_backward_hooks")
_GLOBAL_FORWARD = ("_global_forward_pre_hooks", "_global_forward_hooks")
_GLOBAL_BACKWARD = ("_global_backward_pre_hooks", "_global_backward_hooks")


def _named(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    return model.named_modules(remove_duplicate=True)


def hooks(model: nn.Module, kinds: tuple[str, ...] = FORWARD_HOOKS + BACKWARD_HOOKS) -> list[str]:
    """Every hook of the kinds ``kinds`` (names of ``nn.Module`` hook dicts) that can change what
    ``model`` computes or how it is differentiated, as "where: what" (empty when there is none).
    The global module hooks of the same kinds and gradient hooks on parameters count too."""
    found = []
    for name, mod in _named(model):
        for kind in kinds:
            for hook in getattr(mod, kind, {}).values():
                found.append(
                    f"module {name or '(the model)'!r}: {kind.strip('_').replace('_', ' ')[:-1]} {_what(hook)}"
                )
    for kind in kinds:
        glob = "_global" + kind
        for hook in getattr(_module, glob, {}).values():
            found.append(f"a global module {kind.strip('_').replace('_', ' ')[:-1]} {_what(hook)}")
    if any(k in kinds for k in BACKWARD_HOOKS):
        for name, p in model.named_parameters():
            if getattr(p, "_backward_hooks", None):
                found.append(f"parameter {name!r}: a gradient hook (Tensor.register_hook)")
    return found


def _what(hook: object) -> str:
    return f"({getattr(hook, '__qualname__', None) or type(hook).__name__})"


def global_hooks() -> list[str]:
    """The global module hooks (``torch.nn.modules.module.register_module_*_hook``) now registered."""
    return hooks(nn.Module())


def parametrized(model: nn.Module) -> list[str]:
    """The modules of ``model`` with a ``torch.nn.utils.parametrize`` parametrisation, by name."""
    return [name or "(the model)" for name, mod in _named(model) if parametrize.is_parametrized(mod)]


def weight_norm_parameters(model: nn.Module) -> list[str]:
    """The parameters (by ``named_parameters`` name) that ``torch._weight_norm`` turns into a weight
    (``torch.nn.utils.weight_norm`` or ``torch.nn.utils.parametrizations.weight_norm``). PyTorch's
    double backward of that operator drops the dependence of the saved norms on ``v``: the Hessian
    it gives is not even symmetric (tests/curvature/test_model_state.py measures it against finite
    differences)."""
    from torch.nn.utils.parametrizations import _WeightNorm
    from torch.nn.utils.weight_norm import WeightNorm

    found = []
    for name, mod in _named(model):
        prefix = f"{name}." if name else ""
        for hook in mod._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                found += [f"{prefix}{hook.name}_g", f"{prefix}{hook.name}_v"]
        if parametrize.is_parametrized(mod):
            for tensor, plist in mod.parametrizations.items():
                if any(isinstance(p, _WeightNorm) for p in plist):
                    found += [f"{prefix}parametrizations.{tensor}.{n}" for n, _ in plist.named_parameters()]
    return found


def foreign_forward(mod: nn.Module) -> str | None:
    """Why ``mod``'s ``forward`` may not be its class's own code from ``torch.nn``: an instance
    attribute ``forward``, or a class ``forward`` defined outside the module of the class (patched
    at run time). ``None`` when it is torch's own."""
    if "forward" in vars(mod):
        return f"{type(mod).__name__} has an instance attribute 'forward' (a patched forward)"
    fn = type(mod).forward
    cls = next((c for c in type(mod).__mro__ if "forward" in vars(c)), None)
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if cls is None or module != cls.__module__ or qualname != f"{cls.__name__}.forward":
        return f"{type(mod).__name__}.forward is not torch's own (patched to {module}.{qualname})"
    return None


def _bits(t: torch.Tensor) -> torch.Tensor:
    """``t`` reinterpreted as integers of its item size (NaN compares equal to the same NaN)."""
    if not (t.is_floating_point() or t.is_complex()):
        return t
    kind = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(t.element_size())
    if kind is None:  # complex128: 16 bytes
        return torch.view_as_real(t).contiguous().view(torch.int64)
    return t.contiguous().view(kind)


class ModelSnapshot:
    """The structure of ``model`` and a copy of its parameters and buffers (see the module
    docstring); ``extra`` tensors (the data a cache holds) are compared by version counter."""

    def __init__(self, model: nn.Module, extra: Iterable[torch.Tensor] = ()) -> None:
        self.structure = self._structure(model, list(extra))
        self.copies = [t.detach().clone() for t in self._tensors(model)]

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [p for _, p in model.named_parameters()] + [b for _, b in model.named_buffers()]

    @staticmethod
    def _structure(model: nn.Module, extra: list[torch.Tensor]) -> tuple:
        mods = tuple(
            (
                id(m),
                type(m),
                m.training,
                id(vars(m).get("forward")),
                type(m).forward,
                tuple(tuple(getattr(m, k, {})) for k in FORWARD_HOOKS + BACKWARD_HOOKS),
            )
            for _, m in _named(model)
        )
        glob = tuple(tuple(getattr(_module, k, {})) for k in _GLOBAL_FORWARD + _GLOBAL_BACKWARD)
        tensors = tuple(
            (name, id(t), t.shape, t.dtype, t.device, bool(getattr(t, "_backward_hooks", None)))
            for name, t in [*model.named_parameters(), *model.named_buffers()]
        )
        data = tuple((id(t), t._version) for t in extra)
        return mods, glob, tensors, data

    def matches(self, model: nn.Module, extra: Iterable[torch.Tensor] = ()) -> bool:
        """Whether ``model`` has the recorded structure and every parameter and buffer the recorded
        bits (and each ``extra`` tensor its recorded version)."""
        if self._structure(model, list(extra)) != self.structure:
            return False
        return all(torch.equal(_bits(t.detach()), _bits(c)) for t, c in zip(self._tensors(model), self.copies))
