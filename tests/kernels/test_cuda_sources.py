"""The CUDA sources compile with nvcc (they can only run on a GPU; see benchmarks/gpu_check.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_DIR = Path(__file__).resolve().parents[2] / "csrc" / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path):
    proc = subprocess.run(
        [
            "nvcc",
            "-std=c++17",
            "-O3",
            "-arch=sm_90",
            f"-I{CUDA_DIR}",
            "-Werror",
            "all-warnings",
            "-c",
            str(source),
            "-o",
            str(tmp_path / (source.stem + ".o")),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_there_are_cuda_sources():
    assert {p.name for p in SOURCES} >= {"two_sided.cu", "gauss_newton.cu"}
