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
AUTO_RULES = {
    "two_sided_product": {"cpu": "torch", "cuda": "torch"},
    "gn_product": {"cpu": "torch", "cuda": "torch"},
    "gn_assemble": {"cpu": "torch", "cuda": "torch"},
}


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run these inputs here."""


# kernel name -> backend -> implementation (same signature as the torch reference)
KERNELS: dict[str, dict[str, object]] = {
    "two_sided_product": {"torch": reference.two_sided_product, "cpp": cpp.two_sided_product},
    "gn_product": {"torch": reference.gn_product},
    "gn_assemble": {"torch": reference.gn_assemble},
}


def backend_status(backend: str, device: torch.device, dtype: torch.dtype, kernel: str | None = None) -> str | None:
    """``None`` if ``backend`` can run ``kernel`` on ``device`` with ``dtype``, else the reason it cannot."""
    if backend not in BACKENDS or backend == "auto":
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if kernel is not None and backend not in KERNELS[kernel]:
        return f"there is no {backend} kernel for {kernel} yet (available: {sorted(KERNELS[kernel])})"
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
    return f"the {backend} backend has no kernels in this build"


def _resolve(kernel: str, backend: str, device: torch.device, dtype: torch.dtype):
    """The implementation of ``kernel`` for ``backend`` (``auto``: the measured rule)."""
    if backend == "auto":
        choice = AUTO_RULES[kernel].get(device.type, "torch")
        if backend_status(choice, device, dtype, kernel) is not None:
            choice = "torch"
        return KERNELS[kernel][choice]
    reason = backend_status(backend, device, dtype, kernel)
    if reason is not None:
        raise BackendUnavailable(f"backend {backend!r} is unavailable: {reason}")
    return KERNELS[kernel][backend]


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
    out = _resolve("two_sided_product", backend, v.device, v.dtype)(output_factor, vb, input_factor)
    return out.squeeze(0) if squeeze else out


def gn_product(inputs, upstream, probs, v: torch.Tensor, scale: float, backend: str = "auto") -> torch.Tensor:
    """Masked batched Gauss–Newton product (see :func:`.reference.gn_product`)."""
    return _resolve("gn_product", backend, v.device, v.dtype)(inputs, upstream, probs, v, scale)


def gn_assemble(inputs, upstream, probs, num_outputs: int, p: int, scale: float, backend: str = "auto") -> torch.Tensor:
    """Streamed explicit Gauss–Newton block (see :func:`.reference.gn_assemble`)."""
    return _resolve("gn_assemble", backend, inputs.device, inputs.dtype)(inputs, upstream, probs, num_outputs, p, scale)
