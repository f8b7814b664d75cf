"""Launchers of the CUDA kernels of ``csrc/cuda/`` (the extension ``fastdnc._cuda``).

The extension is built by ``setup.py`` only where ``nvcc`` and a CUDA build of torch exist
(``pip install --no-build-isolation -e .`` on a GPU machine). Elsewhere these launchers are never
selected: :func:`unavailable_reason` says why, and the dispatcher reports it.
"""

from __future__ import annotations

import torch

try:
    from .. import _cuda
except ImportError as e:  # the usual case on CPU-only machines
    _cuda = None
    _REASON: str | None = f"the CUDA extension fastdnc._cuda is not built ({e})"
else:
    _REASON = None


def unavailable_reason() -> str | None:
    if _REASON is not None:
        return _REASON
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return None


def two_sided_product(output_factor: torch.Tensor, v: torch.Tensor, input_factor: torch.Tensor) -> torch.Tensor:
    """CUDA batched Y_j = O V_j I (see :func:`.reference.two_sided_product`)."""
    return _cuda.two_sided_product(output_factor.contiguous(), v.contiguous(), input_factor.contiguous())


def gn_sample_core(roots: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """CUDA per-sample Gauss–Newton core (see :func:`.reference.gn_sample_core`)."""
    return _cuda.gn_sample_core(roots.contiguous(), u.contiguous())


def gn_assemble(inputs: torch.Tensor, roots: torch.Tensor, scale: float) -> torch.Tensor:
    """CUDA fused Gauss–Newton block assembly (see :func:`.reference.gn_assemble`)."""
    return _cuda.gn_assemble(inputs.contiguous(), roots.contiguous(), float(scale))
