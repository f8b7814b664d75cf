"""Optimisers that update a list of tensors in place with fused ``torch._foreach`` ops (no
autograd graph, no ``torch.optim`` bookkeeping); their ``state_dict`` round-trips exactly and is
validated on loading."""

from __future__ import annotations

import math
from typing import Any

import torch


class Optimizer:
    """In-place optimiser on a list of tensors; ``state_dict`` round-trips exactly."""

    name = "gd"

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params
        self.state: dict[str, Any] = {"t": 0}

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        """Plain gradient descent: :math:`\\theta \\leftarrow \\theta - \\eta g`."""
        torch._foreach_add_(self.params, grads, alpha=-lr)
        self.state["t"] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if not isinstance(sd, dict) or not isinstance(sd.get("state"), dict) or "t" not in sd["state"]:
            raise ValueError("the optimizer state is malformed")
        if sd.get("name") != self.name:
            raise ValueError(f"checkpoint was written with optimizer {sd.get('name')!r}, not {self.name!r}")
        for key, value in sd["state"].items():
            if key == "t":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"the optimizer's step count is {value!r}, not a non-negative int")
                continue
            shapes = [tuple(p.shape) for p in self.params]
            if not (
                isinstance(value, list)
                and all(isinstance(t, torch.Tensor) for t in value)
                and [tuple(t.shape) for t in value] == shapes
            ):
                raise ValueError(f"the optimizer state {key!r} does not match the parameters' shapes {shapes}")
        self.state = {k: v if k == "t" else [t.to(p) for t, p in zip(v, self.params)] for k, v in sd["state"].items()}


class SGD(Optimizer):
    """Heavy-ball momentum (PyTorch's convention: ``buf = μ·buf + g``, first ``buf = g``),
    optionally Nesterov."""

    name = "sgd"

    def __init__(self, params: list[torch.Tensor], momentum: float = 0.9, nesterov: bool = False) -> None:
        super().__init__(params)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum, self.nesterov = momentum, nesterov

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        bufs = self.state.get("buf")
        if bufs is None:
            bufs = self.state["buf"] = [g.clone() for g in grads]
        else:
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, grads)
        direction = torch._foreach_add(grads, bufs, alpha=self.momentum) if self.nesterov else bufs
        torch._foreach_add_(self.params, direction, alpha=-lr)
        self.state["t"] += 1


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba)."""

    name = "adam"

    def __init__(
        self, params: list[torch.Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        super().__init__(params)
        self.betas, self.eps = betas, eps
        self.state.update(m=[torch.zeros_like(p) for p in params], v=[torch.zeros_like(p) for p in params])

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        b1, b2 = self.betas
        t = self.state["t"] = self.state["t"] + 1
        m, v = self.state["m"], self.state["v"]
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(1 - b2**t))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, m, denom, value=-lr / (1 - b1**t))


def make_optimizer(name: str, params: list[torch.Tensor], **kw: Any) -> Optimizer:
    """``"gd"`` (default), ``"sgd"`` (momentum, nesterov) or ``"adam"`` (betas, eps)."""
    if name == "gd":
        return Optimizer(params)
    if name == "sgd":
        return SGD(params, momentum=kw.get("momentum", 0.9), nesterov=kw.get("nesterov", False))
    if name == "adam":
        return Adam(params, betas=kw.get("betas", (0.9, 0.999)), eps=kw.get("eps", 1e-8))
    raise ValueError(f"unknown optimizer {name!r}; use 'gd', 'sgd' or 'adam'")
