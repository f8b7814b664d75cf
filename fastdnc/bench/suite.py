"""The pytest-benchmark suite (``benchmarks/test_benchmarks.py`` of a source checkout): where it lives
and the one command that runs it, for ``make bench`` (``benchmarks/run_all.py``) and
``fastdnc bench --compare``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: the benchmark scripts of a source checkout (they do not ship with an installed wheel)
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmarks_file(name: str) -> Path:
    """``benchmarks/NAME`` of the source checkout, or a FileNotFoundError saying where it comes from."""
    path = BENCHMARKS / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the benchmarks ship with the source tree (git clone), not with an installed wheel"
        )
    return path


def run(out: Path, size: str | None = None, min_rounds: int = 3, args: tuple[str, ...] = ()) -> None:
    """Run the suite at ``size`` (``FASTDNC_BENCH_SIZE``, else ``"full"``) with at least ``min_rounds``
    rounds per benchmark and the further pytest ``args``, writing its results to ``out``
    (``--benchmark-json``); a ValueError if any benchmark fails."""
    size = size or os.environ.get("FASTDNC_BENCH_SIZE", "full")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(benchmarks_file("test_benchmarks.py"))]
    cmd += [f"--benchmark-min-rounds={min_rounds}", f"--benchmark-json={out}", *args]
    if subprocess.call(cmd, env={**os.environ, "FASTDNC_BENCH_SIZE": size}) != 0:
        raise ValueError("the benchmark suite failed (see above)")
