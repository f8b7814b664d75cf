"""Launchers of the C++ CPU kernels of ``fastdnc._C`` (csrc/), same signatures as :mod:`.reference`.

Tensors cross into C++ as zero-copy NumPy views; inputs are made contiguous here and the output
is allocated by torch. The kernels use OpenMP threads (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import torch

try:  # the extension is built by setup.py; its absence is reported by the dispatcher
    from .. import _C
except ImportError as e:  # pragma: no cover - only on broken installs
    _C = None
    IMPORT_ERROR: str | None = str(e)
else:
    IMPORT_ERROR = None

DTYPES = (torch.float32, torch.float64)


def available() -> bool:
    return _C is not None


def _np(t: torch.Tensor):
    return t.detach().contiguous().numpy()


def two_sided_product(output_factor: torch.Tensor, v: torch.Tensor, input_factor: torch.Tensor) -> torch.Tensor:
    """C++ batched two-sided product :math:`Y_j = O V_j I` (see :func:`.reference.two_sided_product`)."""
    out = torch.empty(v.shape, dtype=v.dtype)
    fn = _C.two_sided_product_f64 if v.dtype == torch.float64 else _C.two_sided_product_f32
    fn(_np(output_factor), _np(v), _np(input_factor), out.numpy())
    return out
