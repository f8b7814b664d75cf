"""``fastdnc bench --quick``: what this machine reaches, in about two minutes on two cores.

One short table: the matmul roofline (float64 and float32), then each case of
:mod:`fastdnc.bench.cases` at its ``"quick"`` size — the layer Hessian product and the full Hessian
product against autograd, ``torch.func`` and curvlinops when installed, the top-k eigenvalues against
ARPACK (with the product counts), training against autograd + ``torch.optim`` and the Gauss–Newton
core kernel's backends — with fastdnc's time, each baseline's time as a multiple of it, fastdnc's
fraction of the matmul roofline and each implementation's error against the referee.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from .._text import plural
from .cases import BUILDERS, GROUPS, Case, relative_error
from .timing import bandwidth_peak, matmul_peak, median_time

#: the groups of the table: all but ``distributed``, whose processes' start-up alone would take a
#: tenth of the two minutes (``make bench`` times it)
QUICK_GROUPS = tuple(g for g in GROUPS if g != "distributed")


def device() -> str:
    """The CPU model, the threads torch uses and the GPU (if any)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{cpu}; {plural(torch.get_num_threads(), 'thread')}; GPU: {gpu}; torch {torch.__version__}"


def measure(case: Case, min_time: float) -> dict[str, dict]:
    """Each implementation's median time, result error against the referee and product count, or
    why it did not run (``{"failed": text}``)."""
    out: dict[str, dict] = {}
    results = {}
    for name, fn in case.implementations.items():
        if isinstance(fn, str):
            out[name] = {"failed": fn}
            continue
        try:
            results[name] = fn()
            out[name] = {"seconds": median_time(fn, min_time=min_time, repeats=3)}
        except Exception as e:  # noqa: BLE001 - a peer that fails is shown as failed
            out[name] = {"failed": " ".join(f"{type(e).__name__}: {e}".split())[:80]}
            continue
        if name in case.products:
            out[name]["products"] = case.products[name]()
    ref = results.get(case.reference)
    for name, result in results.items():
        out[name]["error"] = None if ref is None else relative_error(result, ref)
    return out


def table(size: str = "quick", groups: tuple[str, ...] = QUICK_GROUPS, min_time: float = 0.2) -> str:
    """The quick benchmark's report (markdown)."""
    peaks = {dtype: matmul_peak(dtype) for dtype in (torch.float64, torch.float32)}
    copy = bandwidth_peak()
    lines = [
        f"fastdnc bench --quick on {device()}",
        "",
        "matmul roofline (one 1024² torch.matmul): "
        + ", ".join(f"{str(d).replace('torch.', '')} {p / 1e9:.1f} GFLOP/s" for d, p in peaks.items())
        + f"; memory bandwidth (one 256 MiB copy): {copy / 1e9:.1f} GB/s",
        "",
        "| group | case | fastdnc | fraction of the roofline (flops; bytes) | baseline: time as a multiple of "
        "fastdnc's (error) |",
        "|---|---|---|---|---|",
    ]
    for group in groups:
        case = BUILDERS[group](size)
        try:
            got = measure(case, min_time)
        finally:
            case.close()
        ours = got["fastdnc"]
        if "failed" in ours:
            lines.append(f"| {group} | {case.name} | failed: {ours['failed']} | | |")
            continue
        flops = f"{case.flops / ours['seconds'] / peaks[case.dtype]:.0%}" if case.flops else "— (products count)"
        frac = f"{flops}; {case.bytes / ours['seconds'] / copy:.0%}"
        others = []
        for name, m in got.items():
            if name == "fastdnc":
                continue
            if "failed" in m:
                others.append(f"{name}: not run ({m['failed']})")
                continue
            extra = f", {m['products']} products" if "products" in m else ""
            err = "" if m["error"] is None else f"error {m['error']:.1e}"
            others.append(f"{name}: {m['seconds'] / ours['seconds']:.2f}× ({err}{extra})")
        products = f", {ours['products']} products" if "products" in ours else ""
        err = "" if ours["error"] is None else f", error {ours['error']:.1e}"
        lines.append(
            f"| {group} | {case.name} | {ours['seconds'] * 1e3:.2f} ms{products}{err} | {frac} | "
            + "; ".join(others)
            + " |"
        )
    lines += [
        "",
        "A multiple above 1× means the baseline is slower than fastdnc. The fraction of the roofline is "
        "fastdnc's GEMM flops per second over the matmul's, then the bytes it must move per second over the "
        "copy's: near 100% of the first a product is flop-bound, and only structure (fewer flops) makes it "
        "faster; near 100% of the second it is memory-bound.",
    ]
    return "\n".join(lines)
