"""Calling a user's module as a function of substituted parameters, in a way every autodiff mode
can differentiate: the substitution (exact for reused modules and tied weights, unlike
``torch.func.functional_call``), attention on the math kernel, and frozen leaves for tracing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def autodiff_friendly_attention() -> Iterator[None]:
    """PyTorch's math SDPA kernel and no fused transformer fast path: both support forward-mode
    AD and double backward, unlike the flash / memory-efficient kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextmanager
def substituted(model: nn.Module, params: dict[str, torch.Tensor]) -> Iterator[None]:
    """Run ``model`` with the tensors ``params`` (by ``named_parameters`` name) in place of those
    parameters, wherever they are used: a module that appears twice and a ``Parameter`` tied into
    several modules see the substitute everywhere, and everything is restored afterwards.
    (``torch.func.functional_call`` corrupts a model whose module appears twice: it leaves a plain
    tensor in place of the parameter after the call.)"""
    live = dict(model.named_parameters())
    swap = {id(live[name]): t for name, t in params.items()}
    saved = []
    try:
        for mod in model.modules():  # each module once, however often it is used
            for attr, p in mod._parameters.items():
                if p is not None and id(p) in swap:
                    saved.append((mod, attr, p))
                    mod._parameters[attr] = swap[id(p)]  # type: ignore[assignment]  # a tensor stands in
        yield
    finally:
        for mod, attr, p in reversed(saved):
            mod._parameters[attr] = p


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """``requires_grad`` off on every parameter while ``linearize`` traces (its substitutes carry the
    derivatives; a leaf that requires grad would refuse the in-place ops of some layers)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
