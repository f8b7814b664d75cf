"""What the modules of any ``nn.Module`` receive and return, seen through forward hooks.

* :func:`call_order`: the leaf modules in the order of their first call in one forward pass.
* :func:`trailing_linear_head`: the default layers of the DNC lens: every ``nn.Linear`` after the
  last call of a module that is neither an ``nn.Linear`` nor an activation (so a ResNet's ``fc``, a
  classifier ``nn.Sequential`` of Linear / ReLU / Dropout, the MLP that is the whole model).
* :func:`captured_passes`: one forward pass over every batch with hooks on chosen modules, yielding
  each batch's flattened inputs and outputs of those modules, its target and the model's output.

Nothing is kept between batches: memory is one batch's features at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

# Modules that may sit between the Linear layers of a head (elementwise or identity maps)
ACTIVATIONS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.ReLU6,
    nn.Identity,
    nn.Dropout,
)


def _leaves(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if not list(m.children())}


@contextmanager
def _hooked(modules: dict[str, nn.Module], hook_of) -> Iterator[None]:
    handles = [m.register_forward_hook(hook_of(name)) for name, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def call_order(model: nn.Module, args: Sequence, kwargs: dict | None = None) -> list[str]:
    """The names of the leaf modules of ``model`` in the order of their first call on one batch."""
    order: list[str] = []

    def hook_of(name):
        def hook(_m, _i, _o):
            if name not in order:
                order.append(name)

        return hook

    with _hooked(_leaves(model), hook_of):
        model(*args, **(kwargs or {}))
    return order


def trailing_linear_head(model: nn.Module, args: Sequence, kwargs: dict | None = None) -> list[str]:
    """The ``nn.Linear`` layers called after the last module that is neither a Linear nor an
    activation (see the module docstring), in call order; a ValueError when the model's last calls
    hold no Linear."""
    leaves = _leaves(model)
    head: list[str] = []
    for name in reversed(call_order(model, args, kwargs)):
        mod = leaves[name]
        if isinstance(mod, nn.Linear):
            head.insert(0, name)
        elif not isinstance(mod, ACTIVATIONS):
            break
    if not head:
        raise ValueError(
            "the model does not end in nn.Linear layers (its last calls are not Linear or activations): pass "
            "layers=[...] with the linear layers to analyse"
        )
    return head


def labels_of(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices from a batch's target: class indices as they are, one-hot or soft rows (N, K)
    by their argmax."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"the targets must be a tensor of class indices or (N, K) rows, got {type(target).__name__}")
    if target.ndim == 2 and target.shape[1] == num_classes and target.is_floating_point():
        return target.argmax(dim=1)
    if target.ndim != 1 or target.is_floating_point():
        raise ValueError(
            f"the targets have shape {tuple(target.shape)} and dtype {target.dtype}: the DNC lens needs class "
            f"indices (N,) or one-hot rows (N, {num_classes})"
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    return target.long()


Capture = tuple[str, str]  # (module name, "input" or "output")


@torch.no_grad()
def captured_passes(
    model: nn.Module, batches, captures: Sequence[Capture]
) -> Iterator[tuple[dict[Capture, torch.Tensor], torch.Tensor, torch.Tensor]]:
    """For every batch: ``({(name, where): features (b × d)}, target, output)``: the flattened input
    (``where="input"``) or output of each named module at its first call in the forward pass."""
    modules = dict(model.named_modules())
    names = sorted({n for n, _ in captures})
    seen: dict[Capture, torch.Tensor] = {}

    def hook_of(name):
        def hook(_m, inputs, output):
            for where, t in (("input", inputs[0] if inputs else None), ("output", output)):
                if (name, where) in captures and (name, where) not in seen and isinstance(t, torch.Tensor):
                    seen[(name, where)] = t.detach().reshape(t.shape[0], -1)

        return hook

    with _hooked({n: modules[n] for n in names}, hook_of):
        for b in batches:
            seen.clear()
            out = model(*b.args, **b.kwargs)
            missing = [c for c in captures if c not in seen]
            if missing:
                raise ValueError(f"{missing} were not seen in the forward pass (modules not called?)")
            yield dict(seen), b.target, out
