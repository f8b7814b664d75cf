"""The one place that chooses a kernel backend.

Backends: ``"torch"`` (pure torch reference, any device; its GEMMs are MKL on CPU and cuBLAS on
GPU), ``"cpp"`` (C++/OpenMP, CPU tensors), ``"triton"`` (CUDA tensors; CPU tensors under
``TRITON_INTERPRET=1``) and ``"cuda"`` (the extension ``fastdnc._cuda``, built where nvcc and a CUDA
torch exist). ``backend="auto"`` follows :data:`AUTO_RULES`: a rule names a backend other than
``torch`` only where a benchmark measured it faster, and each rule's measurement is a row of
``docs/benchmarks.md`` ("Dispatcher rules", ``python benchmarks/bench_kernels.py``). On CUDA
tensors every rule is ``torch``; a rule there changes only with a row measured on a GPU
(``benchmarks/gpu_check.sh`` prints that table).

* ``two_sided_product``: ``torch`` everywhere. It is two GEMMs; the C++ kernel (register-tiled,
  AVX-512/AVX2 clones, OpenMP) is slower than two batched MKL GEMMs on CPU, and there is no CUDA
  kernel (cuBLAS runs GEMMs).
* ``gn_sample_core``: on CPU ``cpp`` for fewer than 8 vectors, ``torch`` (MKL batched GEMM) from 8
  on: the C++ kernel wins at 1 to 4 vectors on most measured shapes and loses from 16 on.
* ``gn_assemble``: ``torch``, whose reference packs the symmetric factors into one GEMM (P²N/2
  flops, a quarter of forming the Kronecker rows; the one-triangle kernels ``cpp`` and ``triton``
  do half). They stay available and tested against it.
* ``gn_gram``: ``torch`` (one GEMM and a broadcast multiply); the one-triangle ``cpp`` and
  ``triton`` kernels are tested against it.

Asking for a backend that cannot run the inputs (wrong device, dtype, not built, no such kernel)
raises :class:`BackendUnavailable` with the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable

import torch

from .._checks import check_tensor
from . import cpp, reference

BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")

# backend="auto" per kernel and device type; every entry other than torch is a measured row of
# docs/benchmarks.md ("Dispatcher rules"); a CUDA entry other than torch needs a row of benchmarks/gpu_check.sh.
AUTO_RULES = {
    "two_sided_product": {"cpu": "torch", "cuda": "torch"},
    "gn_sample_core": {"cpu": "cpp", "cuda": "torch"},  # cpp only below SAMPLE_CORE_CPP_VECTORS vectors
    "gn_assemble": {"cpu": "torch", "cuda": "torch"},
    "gn_gram": {"cpu": "torch", "cuda": "torch"},
}
SAMPLE_CORE_CPP_VECTORS = 8  # gn_sample_core on CPU: cpp below this many vectors (bench_kernels.py)

# kernels that deliberately have no implementation on a backend, and what runs them instead
NO_KERNEL = {
    ("two_sided_product", "cuda"): "it is two GEMMs, which cuBLAS runs through backend='torch'",
    ("gn_assemble", "cuda"): "it is one GEMM of the packed triangles, which cuBLAS runs through backend='torch' "
    "(backend='triton' is the fused one-triangle kernel)",
    ("gn_gram", "cuda"): "it is one GEMM, which cuBLAS runs through backend='torch'",
}


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a ValueError listing them (operators call
    this when they are built, so a typo fails at once and not at the first product)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run these inputs here."""


def _lazy(module: str, name: str) -> Callable:
    """A kernel of an optional backend module, imported on first call (Triton and CUDA are optional)."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(*args, **kwargs)

    call.__name__ = f"{module}.{name}"
    return call


# kernel name -> backend -> implementation (same signature as the torch reference)
KERNELS: dict[str, dict[str, Callable]] = {
    "two_sided_product": {
        "torch": reference.two_sided_product,
        "cpp": cpp.two_sided_product,
        "triton": _lazy("triton_kernels", "two_sided_product"),
    },
    "gn_sample_core": {
        "torch": reference.gn_sample_core,
        "cpp": cpp.gn_sample_core,
        "triton": _lazy("triton_kernels", "gn_sample_core"),
        "cuda": _lazy("cuda", "gn_sample_core"),
    },
    "gn_assemble": {
        "torch": reference.gn_assemble,
        "cpp": cpp.gn_assemble,
        "triton": _lazy("triton_kernels", "gn_assemble"),
    },
    "gn_gram": {
        "torch": reference.gn_gram,
        "cpp": cpp.gn_gram,
        "triton": _lazy("triton_kernels", "gn_gram"),
    },
}


def _triton_status(device: torch.device, dtype: torch.dtype) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'fastdnc[triton]')"
    if dtype not in (torch.float32, torch.float64):
        return f"the Triton kernels support float32/float64, got {dtype}"
    if device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return None
    return f"Triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1), got {device}"


def _cuda_status(device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cuda":
        return f"the CUDA kernels run on CUDA tensors, got {device}"
    if dtype not in (torch.float32, torch.float64):
        return f"the CUDA kernels support float32/float64, got {dtype}"
    from . import cuda

    return cuda.unavailable_reason()


def backend_status(backend: str, device: torch.device, dtype: torch.dtype, kernel: str | None = None) -> str | None:
    """``None`` if ``backend`` can run ``kernel`` on ``device`` with ``dtype``, else the reason it cannot."""
    if backend not in BACKENDS or backend == "auto":
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if kernel is not None and backend not in KERNELS[kernel]:
        why = NO_KERNEL.get((kernel, backend), "not written yet")
        return f"there is no {backend} kernel for {kernel}: {why} (available: {sorted(KERNELS[kernel])})"
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
    if backend == "triton":
        return _triton_status(device, dtype)
    return _cuda_status(device, dtype)


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
            raise ValueError(
                f"{name} must have shape ({n}, {n}) to match v of shape {tuple(v.shape)}, got {tuple(f.shape)}"
            )
    out = _resolve("two_sided_product", backend, v.device, v.dtype)(output_factor, vb, input_factor)
    return out.squeeze(0) if squeeze else out


def _check_operands(shapes: dict[str, tuple[torch.Tensor, tuple[int | None, ...]]]) -> None:
    """Every operand a tensor of the first one's dtype and device with the given shape (None: any
    extent); a mismatch raises with the argument's name on every backend alike (no silent casts)."""
    first = next(iter(shapes.values()))[0]
    for name, (t, shape) in shapes.items():
        check_tensor(t, name, ndim=len(shape), dtype=first.dtype, device=first.device, finite=False)
        if any(want is not None and got != want for got, want in zip(t.shape, shape)):
            text = ", ".join("·" if w is None else str(w) for w in shape)
            raise ValueError(f"{name} must have shape ({text}), got {tuple(t.shape)}")


def gn_sample_core(roots: torch.Tensor, u: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Per-sample Gauss–Newton core (see :func:`.reference.gn_sample_core`). ``auto`` on CPU: the
    C++ kernel for fewer than :data:`SAMPLE_CORE_CPP_VECTORS` vectors, the batched torch einsum (MKL
    batched GEMM) otherwise."""
    check_tensor(roots, "roots", ndim=3, finite=False)
    _check_operands({"roots": (roots, (None, None, None)), "u": (u, (None, roots.shape[0], roots.shape[2]))})
    if backend == "auto" and u.shape[0] >= SAMPLE_CORE_CPP_VECTORS:
        backend = "torch"
    return _resolve("gn_sample_core", backend, u.device, u.dtype)(roots, u)


def gn_assemble(inputs: torch.Tensor, roots: torch.Tensor, scale: float, backend: str = "auto") -> torch.Tensor:
    """Streamed explicit Gauss–Newton block (see :func:`.reference.gn_assemble`)."""
    check_tensor(inputs, "inputs", ndim=2, finite=False)
    _check_operands({"inputs": (inputs, (None, None)), "roots": (roots, (inputs.shape[1], None, None))})
    return _resolve("gn_assemble", backend, inputs.device, inputs.dtype)(inputs, roots, scale)


def gn_gram(
    roots: torch.Tensor, input_gram: torch.Tensor, scale: float, out: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """Accumulate a block's sample-space Gram into ``out`` (see :func:`.reference.gn_gram`)."""
    check_tensor(roots, "roots", ndim=3, finite=False)
    n, m = roots.shape[0], roots.shape[0] * roots.shape[1]
    _check_operands({"roots": (roots, (None, None, None)), "input_gram": (input_gram, (n, n)), "out": (out, (m, m))})
    return _resolve("gn_gram", backend, roots.device, roots.dtype)(roots, input_gram, scale, out)


def sample_gram(*args, **kwargs) -> torch.Tensor:
    """The former name of :func:`gn_gram` (a DeprecationWarning): the operators' ``sample_gram``
    method returns the ``SampleGram`` object, this kernel only accumulates its matrix."""
    warnings.warn("dispatch.sample_gram is the former name of dispatch.gn_gram", DeprecationWarning, stacklevel=2)
    return gn_gram(*args, **kwargs)
