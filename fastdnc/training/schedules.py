"""Learning-rate schedules (``lr(step) = base_lr * lr_factor(step, total)``) and the log-spaced
steps at which training records its history."""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_factor(schedule: str | Callable[[int], float] | None, step: int, total: int, **kw: float) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``.

    ``None``/``"constant"``: 1. ``"cosine"``: :math:`\\tfrac12(1+\\cos(\\pi t/T))`, floored at
    ``min_factor``. ``"linear"``: linear decay to ``min_factor``. ``"step"``: multiplied by
    ``gamma`` (0.1) at each of ``milestones`` (fractions of T, default 0.5 and 0.75).
    ``"exponential"``: ``gamma ** t``. ``warmup`` (a number of steps) ramps linearly from 0 first.
    A callable receives the step and returns the factor.
    """
    warmup = int(kw.get("warmup", 0))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if callable(schedule):
        return float(schedule(step))
    t = (step - warmup) / max(total - warmup, 1)
    lo = float(kw.get("min_factor", 0.0))
    if schedule in (None, "constant"):
        return 1.0
    if schedule == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "linear":
        return lo + (1 - lo) * (1 - t)
    if schedule == "step":
        gamma = float(kw.get("gamma", 0.1))
        return gamma ** sum(t >= m for m in kw.get("milestones", (0.5, 0.75)))
    if schedule == "exponential":
        return float(kw.get("gamma", 0.9999)) ** step
    raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine, linear, step, exponential or a callable")


def log_steps(total: int, per_decade: int = 24) -> list[int]:
    """Log-spaced steps in [0, total]: 0, 1, 2, …, then about ``per_decade`` per decade, and total."""
    if total <= 0:
        return [0]
    pts = {0, total}
    n = max(2, int(per_decade * math.log10(total + 1)) + 1)
    for i in range(n + 1):
        pts.add(int(round((total + 1) ** (i / n))) - 1)
    return sorted(p for p in pts if 0 <= p <= total)
