"""GPU check and timings (run by ``benchmarks/gpu_check.sh`` on a lent GPU).

For every kernel at the shapes of ``gpu_cases.py``, in float32 and float64, and every backend that
can run it (torch = cuBLAS, triton, cuda):

* **correctness** against the torch backend in float64 on the same GPU (float64 rows: ≤ 1e-10
  relative; float32 rows: at most 2× torch's own float32 error plus 1e-6 of the scale);
* **time** (CUDA events, median of rounds) as a speed-up over torch and as a fraction of the
  roofline prediction of ``gpu_model.py`` (docs/gpu.md);
* the **rules table**: the fastest correct backend per kernel and dtype over the shapes, in the
  form of ``fastdnc.kernels.dispatch.AUTO_RULES`` to paste there, with its numbers for
  docs/benchmarks.md.

Run: ``python benchmarks/bench_gpu.py --out gpu.md`` (needs a CUDA GPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402
from gpu_cases import CASES, Case  # noqa: E402
from gpu_model import PEAK, predicted  # noqa: E402

from fastdnc.io import atomic_write_text  # noqa: E402
from fastdnc.kernels import backend_status, dispatch  # noqa: E402

BACKENDS = ("torch", "triton", "cuda")
DEVICE = "cuda"  # a smoke test may point it at the CPU (with the Triton interpreter)


def cuda_time(fn, reps: int = 10, rounds: int = 5) -> float:
    """Median over rounds of the mean time per call (CUDA events), after a warm-up call."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / reps)
    return statistics.median(times)


TIMER = cuda_time


def operands(case: Case, dtype: torch.dtype) -> tuple:
    """The kernel's arguments at the case's shape (seeded), on the GPU."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    s = case.shape

    def rnd(*shape):
        return torch.randn(*shape, generator=g, device=DEVICE, dtype=dtype)

    if case.kernel == "two_sided_product":
        return rnd(s["d"], s["d"]), rnd(s["batch"], s["d"], s["d"]), rnd(s["d"], s["d"])
    if case.kernel == "gn_sample_core":
        return rnd(s["n"], s["kk"], s["p"]), rnd(s["k"], s["n"], s["p"])
    if case.kernel == "gn_assemble":
        return rnd(s["q"], s["n"]), rnd(s["n"], s["kk"], s["p"]), 0.5
    m = s["n"] * s["kk"]
    x = rnd(s["n"], 8)
    return rnd(s["n"], s["kk"], s["p"]), x @ x.T, 0.5, torch.zeros(m, m, device=DEVICE, dtype=dtype)


def call(case: Case, backend: str, args: tuple) -> torch.Tensor:
    if case.kernel == "gn_gram":  # accumulates in place: a fresh zero output per call
        args = (*args[:3], torch.zeros_like(args[3]))
    return getattr(dispatch, case.kernel)(*args, backend=backend)


def measure(case: Case, dtype: torch.dtype) -> dict[str, dict]:
    """Per backend: error against the float64 torch result, allowed bound, time; or why it cannot run."""
    args64 = operands(case, torch.float64)
    exact = call(case, "torch", args64)
    scale = float(exact.abs().max())
    args = tuple(a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args64)
    torch_err = float((call(case, "torch", args).double() - exact).abs().max())
    bound = 1e-10 * scale if dtype == torch.float64 else 2 * torch_err + 1e-6 * scale
    out = {}
    for backend in BACKENDS:
        reason = backend_status(backend, torch.device(DEVICE), dtype, case.kernel)
        if reason is not None:
            out[backend] = {"reason": reason}
            continue
        try:
            err = float((call(case, backend, args).double() - exact).abs().max())
            out[backend] = {"error": err, "bound": bound, "time": TIMER(lambda b=backend: call(case, b, args))}
        except Exception as e:  # noqa: BLE001 - a failing kernel is a row of the report, not the end of the run
            out[backend] = {"reason": f"{type(e).__name__}: {e}"[:120]}
    return out


def report(cases: list[Case] = CASES) -> str:
    torch.backends.cuda.matmul.allow_tf32 = False
    rows, best = [], {}
    for case in cases:
        for dtype in (torch.float32, torch.float64):
            name = str(dtype).replace("torch.", "")
            res = measure(case, dtype)
            t_ref = res["torch"].get("time")
            for backend, r in res.items():
                if "reason" in r:
                    rows.append([case.kernel, case.label, name, backend, "—", "—", "—", "—", r["reason"]])
                    continue
                ok = r["error"] <= r["bound"]
                flops, nbytes = case.work("torch" if backend == "torch" else "fused", dtype.itemsize)
                peak = PEAK["fp32"] if dtype == torch.float32 else PEAK["fp64 tensor" if backend == "torch" else "fp64"]
                model, _ = predicted(flops, nbytes, peak)
                rows.append(
                    [
                        case.kernel,
                        case.label,
                        name,
                        backend,
                        f"{r['error']:.1e} (≤ {r['bound']:.1e})" + ("" if ok else " **FAIL**"),
                        f"{r['time'] * 1e3:.3f} ms",
                        f"{t_ref / r['time']:.2f}×",
                        f"{model / r['time']:.0%}",
                        "",
                    ]
                )
                if ok:
                    key = (case.kernel, name)
                    best.setdefault(key, {}).setdefault(backend, []).append(t_ref / r["time"])
    table = md_table(
        ["kernel", "shape", "dtype", "backend", "max error (bound)", "time", "vs torch", "of model rate", "note"], rows
    )
    rules = [
        [kernel, dtype, backend, ", ".join(f"{x:.2f}×" for x in ratios)]
        for (kernel, dtype), by in best.items()
        for backend, ratios in by.items()
        if backend != "torch" and min(ratios) > 1.1
    ]
    rules_table = (
        md_table(["kernel", "dtype", "backend faster than torch at every shape", "speed-ups"], rules)
        if rules
        else "No custom kernel beat torch by more than 10% at every shape: `auto` stays `torch` on GPU."
    )
    return (
        f"# GPU check on {torch.cuda.get_device_name() if DEVICE == 'cuda' else DEVICE} (torch {torch.__version__}, "
        "TF32 off)\n\n"
        f"{table}\n\n## Rules the measurements support (for `AUTO_RULES`)\n\n{rules_table}\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="GPU correctness and timings of every kernel")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu: needs a CUDA GPU")
    text = report()
    if a.out:
        atomic_write_text(a.out, text)
    print(text)


if __name__ == "__main__":
    main()
