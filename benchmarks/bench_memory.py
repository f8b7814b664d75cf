"""Peak memory factors and dense-eigh rates behind ``fastdnc._memory`` (the refusal estimates).

Run: ``python benchmarks/bench_memory.py --out docs/memory.md``. Each job runs in a fresh process
(``--job NAME N``): it builds its operator, resets the kernel's peak-RSS mark, runs, and reports the
peak growth over the size of the N × N float64 result. ``fastdnc._memory`` must use factors at or
above the measured ones; the page says whether it does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from peak_memory import reset_peak, status_mib  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc import _memory  # noqa: E402
from fastdnc.curvature.operator import CurvatureOperator, DenseOperator, ScaledOperator  # noqa: E402
from fastdnc.io import atomic_write_text  # noqa: E402

JOBS = {  # name -> (what it covers, the factor fastdnc._memory uses at order n, where it comes from)
    "to_dense": (
        "generic to_dense (products with unit-vector chunks)",
        lambda n: _memory.peak_to_dense(n, 1024),
        "`peak_to_dense(n, 1024)`",
    ),
    "eigvalsh": (
        "dense eigvalsh fallback (to_dense + LAPACK)",
        lambda n: max(_memory.PEAK_EIGVALSH, _memory.peak_to_dense(n, 1024)),
        "`PEAK_EIGVALSH` or to_dense",
    ),
    "eigh": (
        "dense eigh fallback (to_dense + LAPACK, vectors)",
        lambda n: max(_memory.PEAK_EIGH, _memory.peak_to_dense(n, 1024)),
        "`PEAK_EIGH` or to_dense",
    ),
    "gn_assembly": (
        "explicit Gauss-Newton assembly of a ReLU layer block",
        lambda n: _memory.PEAK_GN_ASSEMBLY,
        "`PEAK_GN_ASSEMBLY`",
    ),
}


def _operator(job: str, n: int) -> CurvatureOperator:
    if job == "gn_assembly":
        d = int(round(n**0.5))
        return fd.layer_hessian(fd.DeepUFM(10, 40, d, 4, activation="relu", seed=0), 2)
    a = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return ScaledOperator(DenseOperator(a @ a.T, symmetric=True), 1.0)  # the base class's dense paths


def job(name: str, n: int) -> dict:
    op = _operator(name, n)
    if name == "gn_assembly":
        op.roots()  # the cached Jacobian roots belong to the operator, not to the assembly
    call = {
        "to_dense": op.to_dense,
        "gn_assembly": op.to_dense,
        "eigvalsh": lambda: CurvatureOperator.eigvalsh(op),
        "eigh": lambda: CurvatureOperator.eigh(op),
    }[name]
    reset_peak()
    base = status_mib("VmRSS")
    t0 = time.perf_counter()
    call()
    seconds = time.perf_counter() - t0
    output = op.size**2 * 8 / 2**20
    return {"job": name, "n": op.size, "seconds": seconds, "factor": (status_mib("VmHWM") - base) / output}


def measure(n: int) -> list[dict]:
    rows = []
    for name in JOBS:
        proc = subprocess.run(
            [sys.executable, __file__, "--job", name, str(n)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def page(rows: list[dict]) -> str:
    lines = [
        "# Memory estimates",
        "",
        "Regenerate with `python benchmarks/bench_memory.py --out docs/memory.md`. "
        "Peak resident-memory growth of each dense path over its N × N float64 result, measured in a fresh "
        f"process; torch {torch.__version__}, {torch.get_num_threads()} threads. `fastdnc._memory` refuses work "
        "whose estimate (factor × output) exceeds the available memory, so its factors must not be below the "
        "measured ones.",
        "",
        "| path | N | measured peak / output | factor used | holds | seconds |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        what, factor, const = JOBS[r["job"]]
        used = factor(r["n"])
        lines.append(
            f"| {what} | {r['n']} | {r['factor']:.2f} | {used:.2f} ({const}) | "
            f"{'yes' if used >= r['factor'] else '**no**'} | {r['seconds']:.2f} |"
        )
    rates = {r["job"]: r["seconds"] / r["n"] ** 3 for r in rows if r["job"] in ("eigh", "eigvalsh")}
    lines += [
        "",
        "Dense eigendecomposition time per N³ (the warning's estimate, `EIGH_SECONDS_PER_N3`): "
        f"measured {rates['eigvalsh']:.2e} s (values) and {rates['eigh']:.2e} s (vectors); used "
        f"{_memory.EIGH_SECONDS_PER_N3['values']:.1e} and {_memory.EIGH_SECONDS_PER_N3['vectors']:.1e}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--job", nargs=2, metavar=("NAME", "N"))
    ap.add_argument("--n", type=int, nargs="+", default=[1500, 3000])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.job:
        print(json.dumps(job(a.job[0], int(a.job[1]))))
        return
    text = page([row for n in a.n for row in measure(n)])
    print(text)
    if a.out:
        atomic_write_text(a.out, text)


if __name__ == "__main__":
    main()
