"""The settings of a training run and their checks (one place: :func:`fastdnc.train` and the
command line, which runs them before it writes anything)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._checks import check_positive_int, check_seed
from .._threads import check_threads
from .optimizers import make_optimizer
from .schedules import lr_factor


def check_training(
    steps: int,
    lr: float,
    *,
    optimizer: str = "gd",
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    batch_size: int | None = None,
    schedule: str | Callable[[int], float] | None = None,
    schedule_kwargs: dict[str, Any] | None = None,
    check_finite_every: int = 1,
    checkpoint_every: int | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> None:
    """Every check of :func:`train`'s settings that needs no model: a ValueError naming the
    setting. The command line runs it before it writes anything."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    check_positive_int(check_finite_every, "check_finite_every")
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
    make_optimizer(optimizer, [], momentum=momentum, nesterov=nesterov, betas=betas, eps=eps)
    if batch_size is not None and (optimizer == "gd" or not 1 <= batch_size):
        raise ValueError("batch_size needs optimizer='sgd' or 'adam' and must be >= 1")
    lr_factor(schedule, 0, max(steps, 1), **dict(schedule_kwargs or {}))
    check_threads(threads, warn=False)
    check_seed(seed)
