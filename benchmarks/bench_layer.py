"""Exact layer Hessians side by side with autograd, torch.func and the peer libraries, one run.

Tables (ratios = baseline time / fastdnc time, so > 1 means fastdnc is faster):

1. layer HVP at a middle layer of linear and ReLU MSE UFMs, (K, n, d, L) = (10, 50, 64, 4),
   (10, 100, 256, 4), (10, 200, 512, 6), float32 and float64: fastdnc against autograd double
   backward (fresh, and with a cached graph: PyHessian's mode), torch.func jvp(grad), curvlinops
   ``HessianLinearOperator`` on that layer's parameter, and BackPACK ``HMP``;
2. the exact spectrum of a linear layer: Kronecker ``eigh`` against dense ``eigh`` of the autograd
   layer Hessian and scipy ``eigsh`` (top K²) with autograd HVPs, and at d = 1024;
3. the explicit ReLU GN block (d = 64, N = 2000): streamed assembly against ``torch.func`` Hessian,
   time and peak memory (each in a fresh process, ``benchmarks/peak_memory.py``).

Run: ``python benchmarks/bench_layer.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_peak, md_table, median_time, peer_failure, ratio_cell, target_row, timed  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc.curvature import oracles as R  # noqa: E402

CASES = [(10, 50, 64, 4), (10, 100, 256, 4), (10, 200, 512, 6)]


def _as_sequential(m: fd.DeepUFM) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """The UFM as an nn.Sequential on inputs H_1ᵀ (samples as rows), for the peer libraries."""
    layers: list[nn.Module] = []
    for i, w in enumerate(m.weights):
        if i > 0 and m.activation == "relu":
            layers.append(nn.ReLU())
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False).to(w.dtype)
        lin.weight.data.copy_(w.detach())
        layers.append(lin)
    return nn.Sequential(*layers), m.features.detach().T.contiguous(), m.targets.T.contiguous()


def _layer_param(seq: nn.Sequential, layer: int) -> nn.Parameter:
    return [mod for mod in seq if isinstance(mod, nn.Linear)][layer - 1].weight


METRICS: dict[str, float] = {}  # key numbers for the targets table of docs/benchmarks.md


def hvp_rows(quick: bool) -> list[list[str]]:
    rows = []
    cases = CASES[:1] if quick else CASES
    for act in ("linear", "relu"):
        for dtype in (torch.float32, torch.float64):
            for k, n, d, depth in cases:
                m = fd.DeepUFM(k, n, d, depth, activation=act, dtype=dtype, seed=0)
                layer = depth // 2
                f, w = R.block_loss(m, f"W_{layer}")
                v = torch.randn_like(w)
                t0 = time.perf_counter()
                H = fd.layer_hessian(m, layer)
                build = time.perf_counter() - t0
                t_ours = median_time(lambda: H @ v)

                def fresh():
                    ww = w.clone().requires_grad_(True)
                    (g,) = torch.autograd.grad(f(ww), ww, create_graph=True)
                    return torch.autograd.grad(g, ww, v)[0]

                ww = w.clone().requires_grad_(True)
                (g_cached,) = torch.autograd.grad(f(ww), ww, create_graph=True)
                t_fresh = median_time(fresh)
                t_cached = median_time(lambda: torch.autograd.grad(g_cached, ww, v, retain_graph=True)[0])
                t_func = median_time(lambda: torch.func.jvp(torch.func.grad(f), (w,), (v,))[1])
                ref = fresh()
                err = float((H @ v - ref).norm() / ref.norm())
                peers = _peer_hvp_times(m, layer, v)
                best_peer = min([t_cached, t_fresh, t_func, *timed(peers).values()])
                METRICS[f"hvp_cached/{act}/{str(dtype)[6:]}/{d}"] = t_cached / t_ours
                rows.append(
                    [
                        act,
                        str(dtype).replace("torch.", ""),
                        f"({k}, {n}, {d}, {depth}) l={layer}",
                        type(H).__name__,
                        f"{t_ours * 1e3:.3f}",
                        f"{build * 1e3:.1f}",
                        f"{t_fresh / t_ours:.0f}×",
                        f"{t_cached / t_ours:.0f}×",
                        f"{t_func / t_ours:.0f}×",
                        ratio_cell(peers.get("curvlinops"), t_ours, "{:.0f}×"),
                        ratio_cell(peers.get("backpack"), t_ours, "{:.0f}×"),
                        f"{best_peer / t_ours:.0f}×",
                        f"{err:.1e}",
                    ]
                )
    return rows


def _peer_hvp_times(m: fd.DeepUFM, layer: int, v: torch.Tensor) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    seq, x, y = _as_sequential(m)
    p = _layer_param(seq, layer)
    loss = nn.MSELoss(reduction="sum")
    try:
        from curvlinops import HessianLinearOperator

        op = HessianLinearOperator(seq, loss, [p], [(x, y)], check_deterministic=False)
        vv = v.reshape(-1)
        out["curvlinops"] = median_time(lambda: op @ vv)
    except Exception as e:  # noqa: BLE001 - shown as failed, not fatal
        out["curvlinops"] = peer_failure("curvlinops", e)
    try:
        from backpack import backpack, extend
        from backpack.extensions import HMP

        seq_b, loss_b = extend(seq), extend(nn.MSELoss(reduction="sum"))
        pb = _layer_param(seq_b, layer)

        def hmp():
            seq_b.zero_grad()
            with backpack(HMP()):
                loss_b(seq_b(x), y).backward()
            return pb.hmp(v.reshape(pb.shape)[None])

        out["backpack"] = median_time(hmp)
    except Exception as e:  # noqa: BLE001
        out["backpack"] = peer_failure("BackPACK", e)
    return out


def eigh_rows(quick: bool) -> list[list[str]]:
    from scipy.sparse.linalg import LinearOperator, eigsh

    rows = []
    k, n, d, depth = 10, 50, 64, 4
    m = fd.DeepUFM(k, n, d, depth, dtype=torch.float64, seed=0)
    layer = 2
    t_ours = median_time(lambda: fd.layer_hessian(m, layer).eigvalsh())
    t_vecs = median_time(lambda: fd.layer_hessian(m, layer).eigh())
    evals = fd.layer_hessian(m, layer).eigvalsh()
    t0 = time.perf_counter()
    f, w = R.block_loss(m, f"W_{layer}")
    dense = torch.func.jacrev(torch.func.grad(f), chunk_size=512)(w).reshape(w.numel(), w.numel())
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = torch.linalg.eigvalsh(dense)
    t_dense = time.perf_counter() - t0
    err = float((evals - ref).abs().max() / ref.abs().max())
    METRICS["eigh_d64"] = t_dense / t_ours

    def mv(x):
        xt = torch.from_numpy(x.reshape(w.shape)).to(w.dtype)
        return torch.func.jvp(torch.func.grad(f), (w,), (xt,))[1].reshape(-1).numpy()

    t0 = time.perf_counter()
    top = eigsh(
        LinearOperator((w.numel(),) * 2, matvec=mv, dtype="float64"),
        k=k * k,
        which="LA",
        return_eigenvectors=False,
        tol=1e-10,
    )
    t_eigsh = time.perf_counter() - t0
    top_err = float(abs(max(top) - ref[-1]) / ref[-1])
    rows.append(
        [
            "d=64 (P=4096), all P eigenvalues",
            f"{t_ours * 1e3:.2f} ms ({t_vecs * 1e3:.1f} ms with lazy vectors)",
            f"dense eigh {t_dense:.2f} s (+ {t_build:.2f} s to build the Hessian)",
            f"{t_dense / t_ours:.0f}× ({(t_dense + t_build) / t_ours:.0f}× with the build)",
            f"{err:.1e}",
        ]
    )
    rows.append(
        [
            f"d=64, top K²={k * k} only",
            f"{t_ours * 1e3:.1f} ms",
            f"scipy eigsh + autograd HVPs {t_eigsh:.2f} s",
            f"{t_eigsh / t_ours:.0f}×",
            f"{top_err:.1e}",
        ]
    )
    if not quick:
        big = fd.DeepUFM(10, 100, 1024, 4, dtype=torch.float32, seed=0)
        t_big = median_time(lambda: fd.layer_hessian(big, 2).eigvalsh(), min_time=1, repeats=3)
        t_bigv = median_time(lambda: fd.layer_hessian(big, 2).eigh(), min_time=1, repeats=3)
        METRICS["eigh_d1024_seconds"] = t_bigv
        rows.append(
            [
                f"d=1024 (P={1024**2:,}), all eigenvalues, float32",
                f"{t_big:.2f} s ({t_bigv:.2f} s with lazy vectors)",
                "dense: impossible (P² = 10¹² entries)",
                "",
                "",
            ]
        )
    return rows


def _job(name: str, n_per: int) -> tuple[float, float, float]:
    """(seconds, peak MiB above the pre-job resident memory, output MiB) in a fresh process."""
    script = Path(__file__).parent / "peak_memory.py"
    out = subprocess.run([sys.executable, str(script), name, str(n_per)], capture_output=True, text=True, check=True)
    dt, peak, size = (float(x) for x in out.stdout.split())
    return dt, peak, size


def assembly_rows(quick: bool) -> list[list[str]]:
    n_per = 20 if quick else 200
    t_ours, mem_ours, out_mb = _job("assembly", n_per)
    t_ref, mem_ref, _ = _job("torch_func", n_per)
    m = fd.DeepUFM(10, n_per, 64, 4, activation="relu", dtype=torch.float64, seed=0)
    H = fd.layer_hessian(m, 2)
    ref = R.dense_layer_hessian(m, 2) if quick else None
    if ref is not None:
        err = f"{float((H.to_dense() - ref).norm() / ref.norm()):.1e} (f64)"
    else:  # the dense autograd block is too slow here: 4 columns of it by double backward instead
        f, w = R.block_loss(m, "W_2")
        vs = torch.randn(w.numel(), 4, generator=torch.Generator().manual_seed(0), dtype=w.dtype)
        hv = torch.stack([torch.func.jvp(torch.func.grad(f), (w,), (vs[:, j],))[1] for j in range(4)], dim=1)
        err = f"{float((H.to_dense() @ vs - hv).norm() / hv.norm()):.1e} (f64, 4 autograd products)"
    # the packed GEMM of the torch backend: 2N · p(p+1)/2 · q(q+1)/2 flops (p = q = 64)
    flops = 2 * m.num_samples * (64 * 65 // 2) ** 2
    m32 = fd.DeepUFM(10, n_per, 64, 4, activation="relu", dtype=torch.float32, seed=0)
    usable = fd.kernels.backend_status("cpp", torch.device("cpu"), torch.float32, "gn_assemble") is None
    slab = fd.layer_hessian(m32, 2, backend="cpp") if usable else None
    if slab is not None:
        slab.roots()
    t_cpp = median_time(slab.to_dense, min_time=0.0, repeats=1) if slab is not None else float("nan")
    METRICS.update(assembly_memory=mem_ours / out_mb, assembly_speedup=t_ref / t_ours)
    return [
        [
            f"ReLU, d=64, N={m.num_samples}, P={H.size}",
            f"{t_ours:.2f} s",
            f"{mem_ours / out_mb:.2f}×",
            f"{t_ref:.2f} s",
            f"{mem_ref / out_mb:.1f}×",
            f"{t_ref / t_ours:.1f}×",
            f"{t_cpp / t_ours:.1f}×",
            f"{flops / t_ours / matmul_peak(torch.float32):.0%}",
            err,
        ]
    ]


def targets() -> str:
    """The issue's targets against this run's numbers (CPU, 2 threads, float32)."""

    def row(name, key, goal, ok, fmt="{:.0f}×"):
        return target_row(METRICS, name, key, goal, ok, fmt)

    return md_table(
        ["target", "goal", "measured", "status"],
        [
            row(
                "linear layer HVP, (10, 200, 512, 6), vs autograd with cached graph",
                "hvp_cached/linear/float32/512",
                "≥ 100×",
                lambda x: x >= 100,
            ),
            row(
                "all P eigenvalues of a linear layer, d = 64, vs dense eigh", "eigh_d64", "≥ 1000×", lambda x: x >= 1000
            ),
            row(
                "all 10⁶ eigenvalues (and lazy vectors) at d = 1024",
                "eigh_d1024_seconds",
                "< 5 s",
                lambda x: x < 5,
                "{:.2f} s",
            ),
            row(
                "ReLU layer GN product, (10, 100, 256, 4), vs autograd with cached graph",
                "hvp_cached/relu/float32/256",
                "≥ 3×",
                lambda x: x >= 3,
                "{:.1f}×",
            ),
            row(
                "explicit ReLU GN block (d = 64, N = 2000): peak memory / output",
                "assembly_memory",
                "≤ 2×",
                lambda x: x <= 2,
                "{:.2f}×",
            ),
            row(
                "explicit ReLU GN block: speed-up over torch.func Hessian",
                "assembly_speedup",
                "> 1×",
                lambda x: x > 1,
                "{:.1f}×",
            ),
            [
                "GPU: Triton / CUDA batched Kronecker product at d ≥ 1024",
                "≥ 50% of the H200 matmul rate",
                "not measured: no GPU was lent to this session (`benchmarks/gpu_check.sh` is ready)",
                "open",
            ],
        ],
    )


def run(quick: bool = False) -> str:
    hvp = md_table(
        [
            "model",
            "dtype",
            "(K, n, d, L) layer",
            "operator",
            "fastdnc ms",
            "build ms",
            "vs autograd fresh",
            "vs autograd cached",
            "vs torch.func",
            "vs curvlinops",
            "vs BackPACK HMP",
            "vs fastest peer",
            "rel. error",
        ],
        hvp_rows(quick),
    )
    eig = md_table(["problem", "fastdnc", "baseline", "speed-up", "rel. error"], eigh_rows(quick))
    asm = md_table(
        [
            "block",
            "fastdnc time",
            "fastdnc peak mem / output",
            "torch.func time",
            "torch.func peak mem / output",
            "speed-up",
            "vs the C++ slab kernel",
            "fastdnc % of matmul peak (packed flops)",
            "rel. error",
        ],
        assembly_rows(quick),
    )
    return (
        f"### Layer HVP (one vector, cached operator vs each baseline)\n\n{hvp}\n\n"
        f"### Exact layer spectrum\n\n{eig}\n\n### Explicit Gauss–Newton block assembly (float32)\n\n{asm}\n"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smallest case only")
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    print(run(a.quick))
