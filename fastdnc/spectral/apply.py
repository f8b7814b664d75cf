"""How the spectral methods apply an operator: :func:`apply_operator` (an operator, a tensor or any
matmul-able), and a :class:`Meter` that wraps one, counts its products and, once the first product
has been timed, shows a progress bar with the time left (tqdm, on stderr) when the whole call is
estimated to take more than :data:`LONG_SECONDS` (or always with ``show=True``; never with
``show=False``)."""

from __future__ import annotations

import time

import torch

from ..curvature.operator import CurvatureOperator

LONG_SECONDS = 10.0


def apply_operator(op, v: torch.Tensor) -> torch.Tensor:
    """``op @ v`` for a :class:`~fastdnc.curvature.operator.CurvatureOperator`, a tensor or any matmul-able."""
    if isinstance(op, torch.Tensor):
        return op @ v
    return op.matmat(v) if isinstance(op, CurvatureOperator) else op @ v


class Meter:
    """``meter @ v``: the product of the wrapped operator, timed and counted (see the module docstring).
    ``expected`` is the number of operator columns the call will apply (an estimate for Lanczos)."""

    def __init__(self, op, what: str, expected: int, show: bool | None = None) -> None:
        self.op, self.what, self.expected, self.show = op, what, max(int(expected), 1), show
        self.shape, self.dtype = op.shape, op.dtype
        self.device = getattr(op, "device", None)
        self.product_dtype = getattr(op, "product_dtype", op.dtype)
        self.columns, self.seconds, self.bar = 0, 0.0, None

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = apply_operator(self.op, v)
        dt = time.perf_counter() - t0
        cols = v.shape[1] if v.ndim == 2 else 1
        self.columns, self.seconds = self.columns + cols, self.seconds + dt
        if self.bar is None and self.show is not False:
            estimate = self.seconds / self.columns * self.expected
            if self.show or estimate > LONG_SECONDS:
                from tqdm.auto import tqdm

                self.bar = tqdm(
                    total=self.expected,
                    initial=self.columns,
                    desc=f"{self.what} (~{estimate:.0f} s)",
                    unit="product",
                    leave=False,
                    disable=None if self.show is None else False,  # estimated: only on a terminal
                    mininterval=1.0,
                )
        elif self.bar is not None:
            self.bar.total = max(self.bar.total, self.columns)
            self.bar.update(cols)
        return out

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
