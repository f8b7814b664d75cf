"""Argument checks shared by the whole package.

Every public entry point validates its inputs here, so that bad input fails early with a message
that names the argument and what was wrong with it (shape, dtype, NaN, range).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_float_dtype(dtype: torch.dtype, name: str = "dtype") -> torch.dtype:
    """Return ``dtype`` if it is float32 or float64, else raise ``TypeError``."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


SEED_RANGE = (0, 2**63 - 1)


def check_seed(seed: int, name: str = "seed") -> int:
    """Return ``seed`` if it is an int that a torch generator takes (0 … 2⁶³ − 1)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int, got {seed!r}")
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"{name} must be in 0 … 2**63 - 1, got {seed}")
    return seed


def check_decay(value: float, name: str) -> float:
    """Return a finite, non-negative regularisation strength as a float."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return x


def per_layer(value: float | Sequence[float], depth: int, name: str) -> list[float]:
    """Expand a scalar or a length-``depth`` sequence into ``depth`` checked decays."""
    if isinstance(value, (int, float)):
        return [check_decay(value, name)] * depth
    values = list(value)
    if len(values) != depth:
        raise ValueError(f"{name} must be a float or a list of depth={depth} floats, got {len(values)}")
    return [check_decay(v, f"{name}[{i}]") for i, v in enumerate(values)]


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ``ValueError`` if ``t`` holds NaN or Inf."""
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf entries")
    return t


def check_tensor(
    t: torch.Tensor,
    name: str,
    *,
    ndim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Check a tensor's type, rank, dtype, device and finiteness with named errors."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {t.dtype} but {dtype} was expected (no silent casts: convert it with .to({dtype}))"
        )
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name} is on {t.device} but {device} was expected")
    if finite:
        check_finite(t, name)
    return t
