"""What a new user pays before the first result: the disk the install takes and the test suite's
wall time (the README quotes both from the table this writes into docs/benchmarks.md).

Run: ``python benchmarks/bench_setup.py`` (runs the whole test suite once, a few minutes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def disk_use(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (symbolic links not followed)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def test_suite() -> tuple[float, str]:
    """Wall time of ``python -m pytest -q`` in the repository and its summary line."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", proc.stdout, re.M)
    return wall, summary[-1] if summary else f"failed (exit {proc.returncode})"


def run() -> str:
    venv = Path(sys.prefix)
    wall, summary = test_suite()
    rows = [
        [
            f"disk use of the virtual environment (`{venv.name}`: torch CPU, every extra)",
            f"{disk_use(venv) / 1e9:.1f} GB",
        ],
        ["test suite (`python -m pytest -q`)", f"{wall / 60:.1f} min ({summary})"],
    ]
    return md_table(["what", "measured"], rows)


if __name__ == "__main__":
    print(run())
