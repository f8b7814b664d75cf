"""The CUDA sources compile with nvcc (they can only run on a GPU; see benchmarks/gpu_check.sh).

``csrc/cuda/*.cu`` compile alone (warnings are errors). The torch bindings (``bindings.cpp``)
compile against the installed torch's headers. The CPU build of torch ships the ``c10/cuda``
headers but not the one its CMake generates (``c10/cuda/impl/cuda_cmake_macros.h``): the test
writes that one-line header into a temporary folder, which is how a CUDA build of torch defines it.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch.utils.cpp_extension as cpp_extension

CUDA_DIR = Path(__file__).resolve().parents[2] / "csrc" / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")


def _nvcc(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["nvcc", *args], capture_output=True, text=True)


@needs_nvcc
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path):
    proc = _nvcc(
        ["-std=c++17", "-O3", "-arch=sm_90", f"-I{CUDA_DIR}", "-Werror", "all-warnings", "-c", str(source)]
        + ["-o", str(tmp_path / (source.stem + ".o"))]
    )
    assert proc.returncode == 0, proc.stderr


@needs_nvcc
def test_cuda_bindings_compile_against_the_installed_torch(tmp_path):
    macros = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    macros.parent.mkdir(parents=True)
    macros.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [str(tmp_path), str(CUDA_DIR), *cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    proc = _nvcc(
        ["-std=c++20", "-Xcompiler", "-fsyntax-only", "-c", str(CUDA_DIR / "bindings.cpp"), "-o", str(tmp_path / "b.o")]
        + [f"-I{d}" for d in includes]
        + ["-DTORCH_EXTENSION_NAME=_cuda"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_only_fused_kernels_are_cuda_sources():
    """The two-sided product is two GEMMs: cuBLAS through torch runs it, not a hand-written kernel."""
    assert {p.name for p in SOURCES} == {"gauss_newton.cu"}
