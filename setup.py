"""Build of the compiled CPU kernels ``fastdnc._C``.

The extension uses pybind11 and the buffer protocol only (tensors cross the boundary as NumPy
views, without copies), so it compiles in seconds and never needs torch at build time. OpenMP is
used where the compiler accepts ``-fopenmp``.
"""

from __future__ import annotations

import os
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


class BuildExt(build_ext):
    """Adds C++17, -O3 and OpenMP (when available) to every extension."""

    def build_extensions(self) -> None:
        omp = sys.platform != "win32" and _has_flag(self.compiler, "-fopenmp")
        for ext in self.extensions:
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
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
