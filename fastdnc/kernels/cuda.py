"""Launchers of the CUDA kernels of ``csrc/cuda/`` (the extension ``fastdnc._cuda``).

Only the fused per-sample Gauss–Newton core is a CUDA kernel: the two-sided Kronecker product is
two GEMMs and the packed Gauss–Newton assembly one GEMM, which cuBLAS (through torch) runs faster
than a hand-written kernel. The extension is built by ``setup.py`` only where ``nvcc`` and a CUDA
build of torch exist (``pip install --no-build-isolation -e .`` on a GPU machine). Elsewhere the
launcher is never selected: :func:`unavailable_reason` says why, and the dispatcher reports it. The
bindings check every argument in C++ (shape, dtype, device, contiguity) under a device guard.
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


def gn_sample_core(roots: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """CUDA per-sample Gauss–Newton core for all k vectors, each sample's root read once (see
    :func:`.reference.gn_sample_core`)."""
    return _cuda.gn_sample_core(roots.contiguous(), u.contiguous())
