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


def gn_sample_core(roots: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """C++ per-sample Gauss–Newton core (see :func:`.reference.gn_sample_core`)."""
    out = torch.empty(u.shape, dtype=u.dtype)
    fn = _C.gn_sample_core_f64 if u.dtype == torch.float64 else _C.gn_sample_core_f32
    fn(_np(roots), _np(u), out.numpy())
    return out


def gn_assemble(inputs: torch.Tensor, roots: torch.Tensor, scale: float) -> torch.Tensor:
    """C++ streamed Gauss–Newton block assembly (see :func:`.reference.gn_assemble`)."""
    q, n = inputs.shape
    size = roots.shape[2] * q
    out = torch.empty(size, size, dtype=inputs.dtype)
    fn = _C.gn_assemble_f64 if inputs.dtype == torch.float64 else _C.gn_assemble_f32
    chunk = max(1, min(n, 64, (1 << 22) // max(size, 1)))  # thread buffer ≤ 4M elements
    fn(_np(inputs), _np(inputs.T), _np(roots), out.numpy(), float(scale), chunk)
    return out


def gn_gram(roots: torch.Tensor, input_gram: torch.Tensor, scale: float, out: torch.Tensor) -> torch.Tensor:
    """C++ sample-space Gram accumulation, one triangle (see :func:`.reference.gn_gram`); ``out``
    must be contiguous (it is written in place through a NumPy view)."""
    if not out.is_contiguous():
        raise ValueError("gn_gram accumulates into a contiguous out")
    fn = _C.gn_gram_f64 if roots.dtype == torch.float64 else _C.gn_gram_f32
    fn(_np(roots), _np(input_gram), out.detach().numpy(), float(scale))
    return out
