"""Regenerate docs/benchmarks.md and the other generated pages: every benchmark side by side, in one run.

Two steps, so that every number on a page can be traced to a run: **measure** runs each block of
the page (a table or a paragraph a script computes) in page order and keeps them, with the run's
machine, commit and date and each script's raw ``METRICS``, in ``benchmarks/results/benchmarks.json``
(strict JSON, kept in the repository); **render** writes ``docs/benchmarks.md``, ``distributed.md``,
``spectrum.md`` and ``gpu.md`` from that file alone.

Run: ``make bench`` (or ``python benchmarks/run_all.py --out docs/benchmarks.md``); ``--render``
rewrites the pages from the kept file; ``--section TITLE`` measures one section's blocks again. The
blocks of :data:`APART` (the set-up cost, which runs the whole test suite) are kept from the record
when it has them: ``make bench-setup`` measures them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_analysis  # noqa: E402
import bench_distributed  # noqa: E402
import bench_full  # noqa: E402
import bench_kernels  # noqa: E402
import bench_layer  # noqa: E402
import bench_real  # noqa: E402
import bench_setup  # noqa: E402
import bench_spectrum  # noqa: E402
import bench_train  # noqa: E402
import bench_zoo  # noqa: E402
import gpu_model  # noqa: E402
import suite_page  # noqa: E402

from fastdnc import safe_read  # noqa: E402
from fastdnc.bench import compare, suite  # noqa: E402
from fastdnc.io import atomic_write_json, atomic_write_text  # noqa: E402

JSON = Path(__file__).parent / "results" / "benchmarks.json"
SUITE = Path(__file__).parent / "results" / "suite.json"
REPEAT = Path(__file__).parent / "results" / "suite-repeat.json"
ROOT = Path(__file__).resolve().parents[1]
MODULES = (bench_analysis, bench_distributed, bench_full, bench_kernels, bench_layer, bench_real, bench_setup)
MODULES += (bench_spectrum, bench_train, bench_zoo)

#: every block of the pages, in the order the run measures them (the distributed and spectrum pages
#: first: they start processes and fill the caches the way the earlier runs did)
BLOCKS = {
    "distributed": lambda: bench_distributed.run(),
    "spectrum": lambda: bench_spectrum.run(),
    "spectrum_tolerance": lambda: bench_spectrum.tolerance(),
    "gpu_page": lambda: gpu_model.page(),
    "setup": lambda: bench_setup.run(),
    "train": lambda: bench_train.run(),
    "gemm_threads": lambda: bench_train.gemm_threads(),
    "under_load": lambda: bench_train.under_load(),
    "quick_preset": lambda: bench_train.quick_preset_budget(),
    "loaded_operations": lambda: bench_train.loaded_operations(),
    "layer": lambda: bench_layer.run(),
    "layer_targets": lambda: bench_layer.targets(),
    "full": lambda: bench_full.run(),
    "full_targets": lambda: bench_full.targets(),
    "zoo": lambda: bench_zoo.run(),
    "cache_check": lambda: bench_zoo.cache_check(),
    "zoo_targets": lambda: bench_zoo.targets(),
    "analysis": lambda: bench_analysis.run(),
    "analysis_targets": lambda: bench_analysis.targets(),
    "analysis_missed": lambda: bench_analysis.why_missed(),
    "real": lambda: bench_real.run(),
    "real_targets": lambda: bench_real.targets(),
    "real_paper": lambda: bench_real.real_paper(),
    "distributed_targets": lambda: bench_distributed.targets(),
    "kernels": lambda: bench_kernels.run(),
    "kernel_rules": lambda: bench_kernels.rules(),
}

#: blocks that ``make bench`` keeps from the record when it has them (each is measured by its
#: section's own target): the set-up cost runs the whole test suite, ``make bench-setup``
APART = ("setup",)

#: the sections that can be measured again alone (``--section``), by their title: their blocks
SECTIONS = {
    "Set-up cost": ("setup",),
    "Drop-in operators on a model zoo": ("zoo", "cache_check", "zoo_targets"),
    "Spectrum: time to a tolerance": ("spectrum_tolerance",),
    "The paper's real-network run": ("real_paper",),
}

PAGE = """# Benchmarks

Regenerate with `make bench` (= `python benchmarks/run_all.py --out docs/benchmarks.md`: it measures
into `benchmarks/results/benchmarks.json`, then writes this page and the other generated pages from
that file alone; `--render` rewrites them from the kept file without measuring; the set-up cost, which
runs the whole test suite, is measured by `make bench-setup`).
Numbers are **ratios** measured side by side in one run (the machines are noisy), plus the fraction
of the measured matmul roofline (one 1024² `torch.matmul` in the same dtype, same run).
This run: {cpu}, {threads} threads, torch {torch}, Python {python}, at commit `{commit}` on {date}
(the measurements: `benchmarks/results/benchmarks.json`).{took}{later}
No GPU figure is reported: none was measured on a GPU. The GPU kernels' performance model (flops,
bytes and predicted H200 times, nothing measured) is [docs/gpu.md](gpu.md).

## Set-up cost (`benchmarks/bench_setup.py`)

{setup}

## Training throughput (`benchmarks/bench_train.py`)

Deep UFM with K=4, d=64, n=10, L=5, full-batch GD, no logging. fastdnc's trainer uses hand-written
backpropagation (no autograd graph) and fused `torch._foreach` updates; the baseline is
`loss().backward()` plus `torch.optim.SGD`.

{train}

At these sizes one step is ~15 GEMMs of 64×64×40: each is too small to reach the matmul peak, so
the fraction of peak is low for every implementation; the ratio is what the trainer controls.

### Threads by problem size

A second intra-op thread on GEMMs of these sizes (float64, alone):

{gemm_threads}

Below 2·10⁶ flops per GEMM a second thread gains nothing, and on a machine whose other cores are
busy it waits for them: the trainer therefore uses one thread there (`fastdnc._threads`;
`threads=` / `--threads` override it, and the caller's setting is restored). The ReLU UFM above,
alone and beside a process that keeps one core busy:

{under_load}

The main job end to end (five UFMs trained and analysed, figures and report written):

{quick_preset}

Every other operation picks its thread count the same way (operator products, Lanczos, SLQ, the
analyses, the compat modules; each restores the caller's setting). Alone and beside a busy core,
each in a fresh process with the default threads:

{loaded_operations}

## Exact layer Hessians (`benchmarks/bench_layer.py`)

Ratios are baseline time / fastdnc time (> 1: fastdnc is faster), measured in the same run.
"autograd cached" keeps the graph of the layer gradient (`create_graph=True`) and only repeats
the second backward (PyHessian's mode); curvlinops is `HessianLinearOperator` restricted to the
layer's parameter; BackPACK is `HMP` (its cost includes the backward pass it needs).
Linear MSE layers are `KroneckerOperator`s (O(K d²) per product through the rank-K root
A_{{l+1}}); ReLU layers are `BatchedGaussNewton` blocks (cached per-sample Jacobian roots, two GEMMs
with the layer inputs around the C++ per-sample core).

{layer}
### Targets of the layer-Hessian issue (this run)

{layer_targets}

## Full Hessian, eigenpairs and densities (`benchmarks/bench_full.py`)

`fd.hessian` of the UFM (weights only, or with H_1; fit + decay) against the peers, which see the
UFM as an `nn.Sequential` on the inputs H_1ᵀ with the same fit term (their H_1 is data, so the
"W + H_1" rows compare with autograd and torch.func only). Linear MSE uses the structured
O(L·K·d²) path; ReLU the analytic R-op with cached forward state. The eigenpair runs use float64
so that a 1e-6 relative error is meaningful; the reference is `fd.lanczos` at tolerance 1e-12.

{full}
### Targets of the full-Hessian issue (this run)

{full_targets}

How the ReLU targets are stated: the R-op is **flop-bound**. One product at (10, 100, 256, 4) is
14 GEMMs of 256 × 256 × 1000 (the tangent Ẇh + Wḣ, the output Ġhᵀ + Gḣᵀ and the backward
WᵀĠ + ẆᵀG per hidden layer); the "% of matmul peak" column is its fraction of the 1024² matmul
roofline (a lone 256 × 256 × 1000 GEMM reaches about 70% of it on this machine). Autograd's
double backward with a cached graph performs about the same GEMMs, so parity with it (not a lead)
is what a faster kernel can reach; the targets are the time of the same GEMMs run alone over the
product's (≥ 80%) and parity with the cached graph, and a lead over it needs fewer flops
(structure: Kronecker factors, the sample-space Gram, warm starts).
For the same reason a block of 8 vectors saves little: the GEMMs are already large (N = 1000
columns), so batching them adds no efficiency; the target is that it loses none. The
deep linear path is the opposite, **memory-bound** (every GEMM has inner size K or 2K): a product
reads each Ẇ_l three times and each W_l twice; a row-major (P, 8) block first has to be
transposed, which costs as much as the products themselves (a column-major block, as `fd.lanczos`
passes, does not). The eigenpair ratios follow from these: Lanczos needs about as many products
as ARPACK (the top-20 of a freshly initialised ReLU UFM are clustered, gaps ~1e-3 of λ_max), so
the lead over `eigsh` is the per-product lead plus the orthogonalisation, which is
memory-bandwidth-bound on this machine (four passes over the basis per block step).

## Drop-in operators on a model zoo (`benchmarks/bench_zoo.py`)

`fd.HessianOperator` with its defaults (the fused R-op for the MLP; for the CNN and the transformer
the generic path, which keeps the graph of each batch's gradient and runs one backward per product)
against autograd with a cached graph, `torch.func` (`jvp(grad)` per product), curvlinops and
PyHessian, one Hessian-vector product each; ratios are their time over fastdnc's. Models, data and
columns are described in the script's docstring.

{zoo}

### Cache check: what proving the caches costs

Every product of a drop-in operator first proves that its cache (the fused R-op's forward state,
the kept gradient graphs) still describes the model: the structure (hooks, `forward`s, modes) and
every parameter and buffer compared bit for bit with a copy taken when the cache was built, so
`.data` edits and buffer updates are seen (`fastdnc/curvature/model_state.py`). The copy costs the
memory of the parameters and buffers once; the comparison is memory-bound:

{cache_check}

### Targets of the drop-in issue (this run)

{zoo_targets}

Why the speed targets against cached autograd are not met: a Hessian-vector product is
**flop-bound** here and the cached-graph baseline already does only the necessary GEMMs. For the
MLP one product is six GEMMs per hidden layer (the tangents Ẇh + Wḣ, then ĠHᵀ + Gḣᵀ and WᵀĠ + ẆᵀG
backwards), the same work as autograd's second backward through the kept graph, at about the same
fraction of the matmul peak; fastdnc's lead is over the methods that recompute the forward and
first backward per product (torch.func, curvlinops), not over a cached graph. For the same reason a
block of 8 vectors costs about 8 products: no work is shared between vectors once the forward state
is cached. The generic path keeps the gradient's graph like the baseline, so it runs at parity;
`mode="linearize"` (a traced Jacobian-vector product of the gradient, seconds to build) is faster
on the CNN and slower on the transformer, where the traced attention graph is larger than the
backward one. The memory of a product with a kept graph (about one training step's activations
plus the graph of the gradient) exceeds two training steps on the transformer in some runs;
`mode="forward-over-reverse"` keeps nothing and uses the least memory.

## Any network (`benchmarks/bench_analysis.py`)

The DNC lens on plain `nn.Module` classifiers trained with `torch.optim` on the 4,000 offline MNIST
training digits (the README's "Your own network" example and a wider variant); every route in a
table runs in the same process.

{analysis}

### Targets of the DNC-lens issue (this run)

{analysis_targets}

{analysis_missed}

## Real data (`benchmarks/bench_real.py`)

The embedded real-data default (`fastdnc reproduce --preset real --dataset digits`) end to end, and
the exact spectrum of one hidden MLP layer at MNIST scale (5,000 per class). No data set can be
downloaded on this machine, so the MNIST-scale run uses synthetic images written in the real IDX
format; its cost depends only on the shapes.

{real}

{real_targets}

## The paper's real-network run (`benchmarks/bench_real.py`)

{real_paper}

## Distributed products (`benchmarks/bench_distributed.py`)

Sharded products over gloo, one thread per process (details and the launch commands:
[docs/distributed.md](distributed.md), regenerated in the same run).

{distributed}

{distributed_targets}

## Batched two-sided product (`benchmarks/bench_kernels.py`)

Y_j = O V_j I (the product of a Kronecker operator O ⊗ I with a batch of matrices). The `torch`
backend is two batched BLAS GEMMs; `cpp` is the C++/OpenMP register-tiled kernel of `csrc/`.

{kernels}

`backend="auto"` therefore picks `torch` for this generic kernel on CPU (rule in
`fastdnc/kernels/dispatch.py`). The C++ kernel does not beat MKL/OpenBLAS on a plain dense
product; its register-tiled micro-kernel is what the C++ Gauss–Newton assembly builds on.

### Dispatcher rules (`benchmarks/bench_kernels.py`)

The measurement behind every CPU rule of `AUTO_RULES` (`fastdnc/kernels/dispatch.py`): torch and
the C++ kernel at the shapes the operators call them with, the faster one, and what `auto` picks.
A "no" is a shape where the rule (one threshold for all shapes) picks the slower backend.

{kernel_rules}
"""


def machine() -> dict[str, str]:
    """What the run ran on and from: CPU, threads, versions, the commit (``+dirty`` with local
    changes) and the date."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent)
        return out.stdout.strip() if out.returncode == 0 else "unknown"

    commit = git("rev-parse", "--short", "HEAD")
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""),
        "date": datetime.date.today().isoformat(),
    }


def measure(names, kept: dict | None = None, now: dict | None = None) -> dict:
    """Run the blocks ``names`` and return the run's record: the blocks, the machine, each block's
    seconds and each script's METRICS. Given the ``kept`` record of an earlier run, its other blocks
    stay. The record's ``machine`` is this run's when it measured every block of ``make bench``
    (all but :data:`APART`), else the kept one; every block measured on another run is listed under
    ``"measured_apart"`` with that run's machine, commit and date. ``now``: this run's machine, taken
    before anything this run writes makes the checkout look changed (default: taken here)."""
    now = now or machine()
    kept = kept or {}
    base = kept.get("machine", now)
    origin = {name: kept.get("measured_apart", {}).get(name, base) for name in kept.get("blocks", {})}
    record = {
        "machine": now if set(names) >= set(BLOCKS) - set(APART) else base,
        "blocks": dict(kept.get("blocks", {})),
        "metrics": dict(kept.get("metrics", {})),
        "seconds": dict(kept.get("seconds", {})),
    }
    for name in names:
        print(f"measuring {name} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        record["blocks"][name] = BLOCKS[name]()
        record["seconds"][name] = round(time.perf_counter() - t0, 1)
        print(f"  {name}: {record['seconds'][name]:.0f} s", file=sys.stderr, flush=True)
        origin[name] = now
    record["measured_apart"] = {name: m for name, m in origin.items() if m != record["machine"]}
    for mod in MODULES:
        if getattr(mod, "METRICS", None):
            record["metrics"][mod.__name__] = dict(mod.METRICS)
    return record


def suite_page_text(suite_json: Path = SUITE, repeat_json: Path = REPEAT) -> str:
    """docs/bench-suite.md from the suite's JSON, with each ratio's drift in the repeat run when that
    run is of the same commit."""
    data = safe_read.read_json(suite_json, "benchmark suite results")
    repeat = safe_read.read_json(repeat_json, "benchmark suite results") if repeat_json.exists() else None
    source, repeat_source = (os.path.relpath(path.resolve(), ROOT) for path in (suite_json, repeat_json))
    return suite_page.page(data, source, repeat, repeat_source)


def took(seconds: dict[str, float]) -> str:
    """The line that says how long ``make bench`` took, from the record's seconds per step."""
    if "suite" not in seconds:
        return ""
    blocks = sum(t for name, t in seconds.items() if name not in APART and name != "suite")
    apart = ", ".join(f"`{name}` {seconds[name] / 60:.1f} min" for name in APART if name in seconds)
    slowest = sorted(((t, name) for name, t in seconds.items() if name not in APART and name != "suite"), reverse=True)
    return (
        f"\n`make bench` took {(seconds['suite'] + blocks) / 60:.1f} min on this machine: the pytest-benchmark "
        f"suite {seconds['suite'] / 60:.1f} min, the blocks of these pages {blocks / 60:.1f} min (the longest, in minutes: "
        + ", ".join(f"`{name}` {t / 60:.1f}" for t, name in slowest[:6])
        + ")"
        + (f"; measured apart: {apart}." if apart else ".")
    )


def render(record: dict, out: Path) -> None:
    """Write docs/benchmarks.md (``out``) and its sibling pages from a run's record alone."""
    missing = sorted(set(BLOCKS) - set(record["blocks"]))
    if missing:
        raise SystemExit(f"{JSON} lacks the blocks {missing}: run make bench")
    blocks = record["blocks"]
    atomic_write_text(out.parent / "distributed.md", bench_distributed.page(blocks["distributed"]))
    spectrum = bench_spectrum.PAGE.format(command="make bench", body=blocks["spectrum"])
    atomic_write_text(out.parent / "spectrum.md", f"{spectrum}\n{blocks['spectrum_tolerance']}\n")
    atomic_write_text(out.parent / "gpu.md", blocks["gpu_page"])
    later = "".join(
        f"\nMeasured in another run: `{name}` at commit `{m['commit']}` on {m['date']}."
        for name, m in record.get("measured_apart", {}).items()
    )
    atomic_write_text(
        out, PAGE.format(**record["machine"], **blocks, took=took(record.get("seconds", {})), later=later)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--json", type=Path, default=JSON, help=f"the run's record (default {JSON})")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--section", choices=sorted(SECTIONS), help="measure only this section's blocks again")
    group.add_argument("--render", action="store_true", help="write the pages from --json without measuring")
    group.add_argument(
        "--repeat", action="store_true", help=f"run the suite once more into {REPEAT.name} (its between-run noise)"
    )
    a = ap.parse_args()
    record = None
    if a.render or a.section:
        kept = safe_read.read_json(a.json, "benchmark record")
        record = kept if a.render else measure(SECTIONS[a.section], kept)
    elif a.repeat:
        suite.run(REPEAT)
    else:  # make bench: the pytest-benchmark suite, then every block but those apart
        now = machine()  # before the suite rewrites its kept JSON: the commit as it was run
        t0 = time.perf_counter()
        suite.run(SUITE)
        suite_seconds = round(time.perf_counter() - t0, 1)
        if REPEAT.exists() and compare.commit_of(safe_read.read_json(REPEAT, "benchmark suite results")) != (
            compare.commit_of(safe_read.read_json(SUITE, "benchmark suite results"))
        ):
            REPEAT.unlink()  # a repeat of other code: make bench-repeat measures this commit's noise again
        kept = safe_read.read_json(a.json, "benchmark record") if a.json.exists() else None
        apart = [name for name in APART if kept is None or name not in kept.get("blocks", {})]
        record = measure([name for name in BLOCKS if name not in APART] + apart, kept, now)
        record["seconds"]["suite"] = suite_seconds
    atomic_write_text(Path(a.out).parent / "bench-suite.md", suite_page_text())
    if record is not None:
        if not a.render:
            atomic_write_json(a.json, record)
        render(record, Path(a.out))
    print(f"wrote {a.out} and its sibling pages from {a.json} and {SUITE}")


if __name__ == "__main__":
    main()
