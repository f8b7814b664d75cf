"""The one place that chooses a kernel backend.

Backends: ``"torch"`` (pure torch reference, any device), ``"cpp"`` (C++/OpenMP, CPU tensors),
``"triton"`` and ``"cuda"`` (GPU; added with the layer-Hessian kernels). ``backend="auto"`` picks
by a measured rule, documented per kernel in ``docs/benchmarks.md``:

* ``two_sided_product``: ``torch`` on every device. The C++ kernel (register-tiled, AVX-512/AVX2
  clones, OpenMP) reaches 0.3–0.96× the speed of two batched MKL GEMMs on 2 cores
  (``python benchmarks/bench_kernels.py``), so it is never the fastest generic choice; it is
  there as the fused base of the structured layer-Hessian kernels.

Asking for a backend that cannot run the inputs (wrong device, dtype, not built) raises
:class:`BackendUnavailable` with the reason.
"""

from __future__ import annotations

import torch

from .._checks import check_tensor
from . import cpp, reference

BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")

# backend="auto" per kernel and device type, from benchmarks/bench_kernels.py (docs/benchmarks.md).
AUTO_RULES = {"two_sided_product": {"cpu": "torch", "cuda": "torch"}}


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run these inputs here."""


def backend_status(backend: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """``None`` if ``backend`` can run on ``device`` with ``dtype``, else the reason it cannot."""
    if backend == "torch":
        return None
    if backend == "cpp":
        if not cpp.available():
            return f"the C++ extension fastdnc._C is not built ({cpp.IMPORT_ERROR})"
        if device.type != "cpu":
            return f"the C++ kernels run on CPU tensors, got {device}"
        if dtype not in cpp.DTYPES:
            return f"the C++ kernels support float32/float64, got {dtype}"
        return None
    if backend in ("triton", "cuda"):
        return f"the {backend} backend has no kernel for this operation yet"
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def _require(backend: str, device: torch.device, dtype: torch.dtype) -> None:
    reason = backend_status(backend, device, dtype)
    if reason is not None:
        raise BackendUnavailable(f"backend {backend!r} is unavailable: {reason}")


def _resolve(kernel: str, backend: str, device: torch.device, dtype: torch.dtype) -> str:
    if backend == "auto":
        backend = AUTO_RULES[kernel].get(device.type, "torch")
        return backend if backend_status(backend, device, dtype) is None else "torch"
    _require(backend, device, dtype)
    return backend


def two_sided_product(
    output_factor: torch.Tensor, v: torch.Tensor, input_factor: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """Batched :math:`Y_j = O V_j I` on the chosen backend (see :func:`.reference.two_sided_product`).

    ``v`` may be (p, q) or (batch, p, q); the result has the same shape.
    """
    check_tensor(v, "v", finite=False)
    squeeze = v.ndim == 2
    vb = v.unsqueeze(0) if squeeze else v
    if vb.ndim != 3:
        raise ValueError(f"v must have shape (p, q) or (batch, p, q), got {tuple(v.shape)}")
    _, p, q = vb.shape
    for name, f, n in (("output_factor", output_factor, p), ("input_factor", input_factor, q)):
        check_tensor(f, name, ndim=2, dtype=v.dtype, device=v.device, finite=False)
        if f.shape != (n, n):
            raise ValueError(f"{name} must have shape ({n}, {n}) to match v of shape {tuple(v.shape)}, "
                             f"got {tuple(f.shape)}")
    backend = _resolve("two_sided_product", backend, v.device, v.dtype)
    fn = cpp.two_sided_product if backend == "cpp" else reference.two_sided_product
    out = fn(output_factor, vb, input_factor)
    return out.squeeze(0) if squeeze else out
