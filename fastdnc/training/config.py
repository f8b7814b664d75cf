"""The settings of a training run, in one place: :class:`TrainConfig` is checked once when it is
made and used by :func:`fastdnc.train`, the checkpoint's record of the run (:meth:`TrainConfig.record`),
the resume check and the command line (which builds one before it writes anything)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .._checks import check_positive_int, check_seed
from .._threads import check_threads
from ..io import plain
from .optimizers import make_optimizer
from .schedules import lr_factor


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`fastdnc.train` needs besides the model and what it logs.

    Args:
        steps: number of updates (≥ 0). lr: base learning rate (times the schedule's factor).
        optimizer: ``"gd"`` (full batch, the paper's), ``"sgd"`` (``momentum``, ``nesterov``,
            optional ``batch_size``) or ``"adam"`` (``betas``, ``eps``).
        batch_size: samples per step (``None``: full batch; needs ``"sgd"`` or ``"adam"``).
        schedule, schedule_kwargs: the learning-rate schedule (:func:`~fastdnc.training.lr_factor`).
        seed: the mini-batch sampler's seed. check_finite_every: steps between NaN/Inf checks.
        checkpoint_every: steps between checkpoints (``None``: ``steps // 20``).
        threads: intra-op threads (``None``: by the size of a step's GEMMs).

    A setting out of range raises a ValueError naming it, before anything is trained or written.
    """

    steps: int
    lr: float = 0.1
    optimizer: str = "gd"
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int | None = None
    schedule: str | Callable[[int], float] | None = None
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    check_finite_every: int = 1
    checkpoint_every: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        steps, lr = self.steps, self.lr
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite positive number, got {lr!r}")
        check_positive_int(self.check_finite_every, "check_finite_every")
        if self.checkpoint_every is not None:
            check_positive_int(self.checkpoint_every, "checkpoint_every")
        make_optimizer(self.optimizer, [], **self.optimizer_settings())
        if self.batch_size is not None and (self.optimizer == "gd" or not 1 <= self.batch_size):
            raise ValueError("batch_size needs optimizer='sgd' or 'adam' and must be >= 1")
        object.__setattr__(self, "schedule_kwargs", dict(self.schedule_kwargs or {}))
        lr_factor(self.schedule, 0, max(steps, 1), **self.schedule_kwargs)
        check_threads(self.threads, warn=False)
        check_seed(self.seed)

    def optimizer_settings(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~fastdnc.training.make_optimizer` besides the name."""
        return dict(momentum=self.momentum, nesterov=self.nesterov, betas=self.betas, eps=self.eps)

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (the base rate times the schedule's factor)."""
        return self.lr * lr_factor(self.schedule, step, self.steps, **self.schedule_kwargs)

    def record(self, model: torch.nn.Module, command: dict[str, Any] | None = None) -> dict:
        """Everything that determines the run besides its length, as plain data: the optimiser and
        the settings it reads, the schedule, the batch size, the seed, the model's
        ``checkpoint_config()`` (its class, shapes, activation, loss, decays, dtype) where it has
        one, and the settings of the command line that started it (``command``). A checkpoint
        stores it, and resuming with anything different is refused."""
        cfg: dict[str, Any] = {
            "lr": self.lr,
            "optimizer": self.optimizer,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "schedule": self.schedule if self.schedule is None or isinstance(self.schedule, str) else "callable",
            "schedule_kwargs": self.schedule_kwargs,
        }
        if self.optimizer == "sgd":
            cfg.update(momentum=self.momentum, nesterov=self.nesterov)
        if self.optimizer == "adam":
            cfg.update(betas=list(self.betas), eps=self.eps)
        describe = getattr(model, "checkpoint_config", None)
        cfg["model"] = describe() if callable(describe) else {"class": type(model).__name__}
        if command is not None:
            cfg["command"] = command
        return plain(cfg)


SETTINGS = tuple(f.name for f in fields(TrainConfig))


def check_training(steps: int, lr: float, **settings: Any) -> None:
    """Every check of :func:`train`'s settings that needs no model (the checks of
    :class:`TrainConfig`): a ValueError naming the setting."""
    TrainConfig(steps, lr, **settings)
