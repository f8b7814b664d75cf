"""Build of the compiled kernels.

* ``fastdnc._C`` (always): the C++ CPU kernels of ``csrc/``. pybind11 and the buffer protocol only
  (tensors cross the boundary as NumPy views, without copies), so it compiles in seconds and never
  needs torch at build time. OpenMP where the compiler accepts ``-fopenmp``.
* ``fastdnc._cuda`` (only where ``nvcc`` is on the PATH **and** a CUDA build of torch is importable
  at build time, i.e. ``pip install --no-build-isolation -e .`` on a GPU machine): the CUDA kernels
  of ``csrc/cuda/`` with their torch bindings. Elsewhere it is skipped and the dispatcher says so.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup


def _has_flag(compiler, flag: str) -> bool:
    """Return whether ``compiler`` compiles and links a trivial OpenMP program with ``flag``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=[flag])
        except Exception:
            return False
    return True


def _cuda_extension():
    """The CUDA extension, or None where nvcc or a CUDA torch is missing."""
    if shutil.which("nvcc") is None:
        return None, None
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except ImportError:
        return None, None
    if torch.version.cuda is None:
        return None, None
    src = [os.path.join("csrc", "cuda", f) for f in ("bindings.cpp", "gauss_newton.cu")]
    ext = CUDAExtension("fastdnc._cuda", src, include_dirs=[os.path.join("csrc", "cuda")],
                        extra_compile_args={"cxx": ["-O3", "-std=c++20"], "nvcc": ["-O3", "-std=c++17"]})
    return ext, BuildExtension


CUDA_EXT, TORCH_BUILD = _cuda_extension()


class BuildExt(TORCH_BUILD or build_ext):
    """Adds -O3 and OpenMP (when available) to the CPU extension; builds the CUDA one as torch does."""

    def build_extensions(self) -> None:
        omp = sys.platform != "win32" and _has_flag(self.compiler, "-fopenmp")
        for ext in self.extensions:
            if ext.name != "fastdnc._C":
                continue
            ext.extra_compile_args += ["-O3", "-ffp-contract=fast"]
            if omp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
                ext.define_macros.append(("FASTDNC_OPENMP", "1"))
        super().build_extensions()


ext_modules = [
    Pybind11Extension(
        "fastdnc._C",
        sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".cpp")),
        include_dirs=["csrc"],
        cxx_std=17,
    )
] + ([CUDA_EXT] if CUDA_EXT is not None else [])

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
