"""Full Hessian products, top eigenpairs and spectral densities, side by side with the peers, one run.

1. full HVP (all weights; and with H_1) of linear and ReLU MSE UFMs at (K, n, d, L) = (10, 50, 64, 4),
   (10, 100, 256, 4), (10, 200, 512, 6), float32: fastdnc (one vector, and per vector in a block of 8)
   against autograd double backward (fresh, and with a cached graph: PyHessian's mode), torch.func
   jvp(grad) and vjp(grad), curvlinops ``HessianLinearOperator`` (vector and matmat) and
   ``GGNLinearOperator``, and BackPACK ``hessian_vector_product``;
2. the top-20 Hessian eigenpairs of the ReLU UFM (10, 100, 256, 4) in float64: ``fd.lanczos`` against
   scipy ``eigsh`` with autograd HVPs, hessian-eigenthings' Lanczos (reorthogonalised, 100 iterations)
   and PyHessian's power iteration, each with its top-20 error against a tight reference;
3. SLQ density (100 Lanczos steps, one probe) against PyHessian's and curvlinops'.

Run: ``python benchmarks/bench_full.py [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_layer import _as_sequential  # noqa: E402
from common import PeerFailure, matmul_peak, md_table, median_time, peer_failure, ratio_cell, target_row, timed  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc.bench.cases import rop_flops  # noqa: E402
from fastdnc.curvature import oracles as R  # noqa: E402

CASES = [(10, 50, 64, 4), (10, 100, 256, 4), (10, 200, 512, 6)]
METRICS: dict[str, float] = {}


def _fit_loss(n: int):
    """The package's fit term 1/(2N) Σ‖z − y‖² for (N × K) outputs: the peers' loss."""
    return lambda out, y: 0.5 * (out - y).square().sum() / n


def gemms_alone(m: fd.DeepUFM, include_features: bool) -> float:
    """Seconds of the R-op's GEMMs run alone (each layer's shape, as many as :func:`rop_flops`
    counts), in the model's dtype: the bound of a flop-bound product."""
    total = 0.0
    for l, w in enumerate(m.tensors()[0]):
        a = torch.randn(w.shape, dtype=w.dtype)
        h = torch.randn(w.shape[1], m.num_samples, dtype=w.dtype)
        has_hdot = l > 0 or include_features
        count = (1 + has_hdot) * 2 + (2 if has_hdot else 0)
        total += count * median_time(lambda: a @ h, min_time=0.1)
    return total


def hvp_rows(quick: bool) -> list[list[str]]:
    peak = matmul_peak(torch.float32)
    rows = []
    for act in ("linear", "relu"):
        for k, n, d, depth in CASES[:1] if quick else CASES:
            for inc in (False, True):
                m = fd.DeepUFM(k, n, d, depth, activation=act, dtype=torch.float32, seed=0)
                f, theta = R.flat_loss(m, inc)
                v = torch.randn_like(theta)
                v8 = torch.randn(theta.numel(), 8)
                H = fd.hessian(m, include_features=inc)
                t_ours = median_time(lambda: H @ v)
                t_ours8 = median_time(lambda: H @ v8) / 8
                th = theta.clone().requires_grad_(True)

                def fresh():
                    tt = theta.clone().requires_grad_(True)
                    (g,) = torch.autograd.grad(f(tt), tt, create_graph=True)
                    return torch.autograd.grad(g, tt, v)[0]

                (g_cached,) = torch.autograd.grad(f(th), th, create_graph=True)
                times = {
                    "autograd fresh": median_time(fresh),
                    "autograd cached (PyHessian)": median_time(
                        lambda: torch.autograd.grad(g_cached, th, v, retain_graph=True)[0]
                    ),
                    "torch.func jvp(grad)": median_time(lambda: torch.func.jvp(torch.func.grad(f), (theta,), (v,))[1]),
                    "torch.func vjp(grad)": median_time(lambda: torch.func.vjp(torch.func.grad(f), theta)[1](v)[0]),
                }
                ref = fresh()
                err = float((H @ v - ref).norm() / ref.norm())
                if not inc:
                    times.update(_peer_times(m, v, v8))
                measured = timed(times)
                best_name = min(measured, key=measured.__getitem__)
                METRICS[f"{act}/{d}/{inc}"] = times[best_name] / t_ours
                METRICS[f"{act}/{d}/{inc}/matmat"] = t_ours / t_ours8
                for name in ("curvlinops", "autograd cached (PyHessian)"):
                    if name in measured:
                        METRICS[f"{act}/{d}/{inc}/{name}"] = measured[name] / t_ours
                if act == "relu" and not inc and d == 256:
                    METRICS[f"{act}/{d}/{inc}/gemms_alone"] = gemms_alone(m, inc) / t_ours
                roof = f"{rop_flops(m, inc) / t_ours / peak:.0%}" if act == "relu" else "—"
                rows.append(
                    [
                        act,
                        f"({k}, {n}, {d}, {depth})",
                        "W + H_1" if inc else "W",
                        type(H).__name__,
                        f"{t_ours * 1e3:.2f}",
                        roof,
                        f"{t_ours / t_ours8:.1f}×",
                    ]
                    + [ratio_cell(times.get(c), t_ours) for c in PEER_COLUMNS]
                    + [f"{best_name}: {times[best_name] / t_ours:.1f}×", f"{err:.1e}"]
                )
    return rows


EIGENTHINGS_ITERATIONS = (100, 200, 400, 800)  # Lanczos iterations tried for hessian-eigenthings

PEER_COLUMNS = [
    "autograd fresh",
    "autograd cached (PyHessian)",
    "torch.func jvp(grad)",
    "torch.func vjp(grad)",
    "curvlinops",
    "curvlinops matmat (per vector)",
    "curvlinops GGN",
    "BackPACK",
]


def _peer_times(m: fd.DeepUFM, v: torch.Tensor, v8: torch.Tensor) -> dict[str, float]:
    seq, x, y = _as_sequential(m)
    params = list(seq.parameters())
    loss = _fit_loss(m.num_samples)
    out: dict[str, float | PeerFailure] = {}
    lam = m.weight_decay[0]
    try:
        from curvlinops import GGNLinearOperator, HessianLinearOperator

        lf = nn.MSELoss(reduction="sum")  # curvlinops needs a loss module (sum = 2N × the fit term)
        h = HessianLinearOperator(seq, lf, params, [(x, y)], check_deterministic=False)
        out["curvlinops"] = median_time(lambda: h @ v + lam * v)
        out["curvlinops matmat (per vector)"] = median_time(lambda: h @ v8) / 8
        g = GGNLinearOperator(seq, lf, params, [(x, y)], check_deterministic=False)
        out["curvlinops GGN"] = median_time(lambda: g @ v)
    except Exception as e:  # noqa: BLE001 - a peer that fails is shown as failed, not fatal
        for name in ("curvlinops", "curvlinops matmat (per vector)", "curvlinops GGN"):
            out.setdefault(name, peer_failure("curvlinops", e))
    try:
        from backpack.hessianfree.hvp import hessian_vector_product

        vs = list(torch.split(v, [p.numel() for p in params]))
        vs = [a.reshape(p.shape) for a, p in zip(vs, params)]
        out["BackPACK"] = median_time(lambda: hessian_vector_product(loss(seq(x), y), params, vs))
    except Exception as e:  # noqa: BLE001
        out["BackPACK"] = peer_failure("BackPACK", e)
    return out


def eig_rows(quick: bool) -> list[list[str]]:
    from scipy.sparse.linalg import LinearOperator, eigsh

    k, n, d, depth = (10, 20, 32, 3) if quick else (10, 100, 256, 4)
    m = fd.DeepUFM(k, n, d, depth, activation="relu", dtype=torch.float64, seed=0)
    H = fd.hessian(m, decay=False)
    ref = fd.lanczos(H, k=20, tol=1e-12, block_size=1, max_matvecs=20_000).eigenvalues

    def rel_err(vals) -> float:
        vals = torch.sort(torch.as_tensor(vals, dtype=torch.float64), descending=True).values[:20]
        return float(((vals - ref).abs() / ref.abs()).max())

    rows = []
    t0 = time.perf_counter()
    res = fd.lanczos(H, k=20, tol=1e-8)
    t_ours = time.perf_counter() - t0
    METRICS["eig_ours"] = t_ours
    rows.append(
        [
            "fastdnc lanczos (defaults: adaptive block, tol 1e-8)",
            f"{t_ours:.2f} s",
            "1×",
            str(res.num_matvecs),
            f"{rel_err(res.eigenvalues):.1e}",
        ]
    )
    for label, run in (
        (
            "fastdnc lanczos (fixed block 4, a probe at every convergence)",
            lambda: fd.lanczos(H, k=20, tol=1e-8, block_size=4),
        ),
        (
            "fd.top_eigenpairs (warm: the GGN's exact top 22 via its Gram)",
            lambda: fd.top_eigenpairs(m, 20, decay=False, tol=1e-8),
        ),
        (
            "fastdnc lanczos, mixed: float32 products, float64 basis and refinement",
            lambda: fd.lanczos(H, k=20, tol=1e-8, low_precision=fd.hessian(copy.deepcopy(m).float(), decay=False)),
        ),
    ):
        t0 = time.perf_counter()
        other = run()
        t = time.perf_counter() - t0
        low = f" + {other.low_precision_matvecs} in float32" if other.low_precision_matvecs else ""
        rows.append(
            [
                label,
                f"{t:.2f} s",
                f"{t / t_ours:.1f}×",
                f"{other.num_matvecs}{low}",
                f"{rel_err(other.eigenvalues):.1e}",
            ]
        )

    f, theta = R.flat_loss(m, False, decay=False)
    th = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(th), th, create_graph=True)
    count = [0]

    def mv(x):
        count[0] += 1
        return torch.autograd.grad(g, th, torch.from_numpy(x.reshape(-1)), retain_graph=True)[0].numpy()

    t0 = time.perf_counter()
    vals = eigsh(
        LinearOperator((theta.numel(),) * 2, matvec=mv, dtype="float64"),
        k=20,
        which="LA",
        tol=1e-8,
        return_eigenvectors=False,
    )
    t = time.perf_counter() - t0
    METRICS["eig_eigsh"] = t / t_ours
    rows.append(
        [
            "scipy eigsh + autograd HVPs (cached graph)",
            f"{t:.2f} s",
            f"{t / t_ours:.1f}×",
            str(count[0]),
            f"{rel_err(vals):.1e}",
        ]
    )

    seq, x, y = _as_sequential(m)
    loss = _fit_loss(m.num_samples)
    try:
        import hessian_eigenthings as he

        op = he.HessianOperator(seq, [(x, y)], lambda model, batch: loss(model(batch[0]), batch[1]))
        for iterations in EIGENTHINGS_ITERATIONS:  # as many as it needs to reach 1e-6 on the top 20
            t0 = time.perf_counter()
            r = he.lanczos(op, k=20, which="LA", reorthogonalize=True, max_iter=iterations, seed=0)
            t = time.perf_counter() - t0
            if rel_err(r.eigenvalues) <= 1e-6:
                break
        METRICS["eig_eigenthings"] = t / t_ours
        rows.append(
            [
                f"hessian-eigenthings lanczos (reorth., max_iter {iterations}: the first of {list(EIGENTHINGS_ITERATIONS)} "
                "reaching 1e-6)",
                f"{t:.2f} s",
                f"{t / t_ours:.1f}×",
                f"≤ {iterations} (its API does not report the count)",
                f"{rel_err(r.eigenvalues):.1e}",
            ]
        )
    except Exception as e:  # noqa: BLE001
        rows.append(
            ["hessian-eigenthings lanczos", peer_failure("hessian-eigenthings", e), "—"] + ["—"] * (len(rows[0]) - 3)
        )
    try:
        from pyhessian import hessian as pyh

        hs = pyh(seq, loss, data=(x, y), cuda=False)
        t0 = time.perf_counter()
        vals, _ = hs.eigenvalues(top_n=20)
        t = time.perf_counter() - t0
        rows.append(
            [
                "PyHessian power iteration (default tol 1e-3)",
                f"{t:.2f} s",
                f"{t / t_ours:.1f}×",
                "—",
                f"{rel_err(vals):.1e}",
            ]
        )
    except Exception as e:  # noqa: BLE001
        rows.append(["PyHessian power iteration", peer_failure("pyhessian", e), "—"] + ["—"] * (len(rows[0]) - 3))
    return rows


def density_rows(quick: bool) -> list[list[str]]:
    k, n, d, depth = (10, 20, 32, 3) if quick else (10, 100, 256, 4)
    m = fd.DeepUFM(k, n, d, depth, activation="relu", dtype=torch.float64, seed=0)
    H = fd.hessian(m, decay=False)
    t0 = time.perf_counter()
    fd.spectral_density(H, num_probes=1, steps=100)
    t_ours = time.perf_counter() - t0
    rows = [["fastdnc spectral_density (100 steps, 1 probe)", f"{t_ours:.2f} s", "1×"]]
    seq, x, y = _as_sequential(m)
    loss = _fit_loss(m.num_samples)
    try:
        from pyhessian import hessian as pyh

        hs = pyh(seq, loss, data=(x, y), cuda=False)
        t0 = time.perf_counter()
        hs.density(iter=100, n_v=1)
        t = time.perf_counter() - t0
        rows.append(["PyHessian density (iter 100, n_v 1)", f"{t:.2f} s", f"{t / t_ours:.1f}×"])
    except Exception as e:  # noqa: BLE001
        rows.append(["PyHessian power iteration", peer_failure("pyhessian", e), "—"] + ["—"] * (len(rows[0]) - 3))
    try:
        from curvlinops import HessianLinearOperator, lanczos_approximate_spectrum

        op = HessianLinearOperator(
            seq, nn.MSELoss(reduction="sum"), list(seq.parameters()), [(x, y)], check_deterministic=False
        )
        t0 = time.perf_counter()
        lanczos_approximate_spectrum(op, ncv=100, boundaries=(-1.0, 1.0))
        t = time.perf_counter() - t0
        rows.append(["curvlinops lanczos_approximate_spectrum (ncv 100)", f"{t:.2f} s", f"{t / t_ours:.1f}×"])
    except Exception as e:  # noqa: BLE001
        rows.append(
            ["curvlinops lanczos_approximate_spectrum", peer_failure("curvlinops spectrum", e), "—"]
            + ["—"] * (len(rows[0]) - 3)
        )
    return rows


def memory_rows() -> list[list[str]]:
    script = Path(__file__).parent / "peak_memory.py"
    out = {}
    for job in ("full_hvp", "train_step"):
        res = subprocess.run([sys.executable, str(script), job, "100"], capture_output=True, text=True, check=True)
        out[job] = [float(x) for x in res.stdout.split()]
    METRICS["memory_ratio"] = out["full_hvp"][1] / max(out["train_step"][1], 1e-9)
    return [
        [
            "ReLU UFM (10, 100, 256, 4), float32",
            f"{out['full_hvp'][1]:.1f} MiB",
            f"{out['train_step'][1]:.1f} MiB",
            f"{METRICS['memory_ratio']:.2f}×",
        ]
    ]


def targets() -> str:
    def row(name, key, goal, ok, fmt="{:.1f}×"):
        return target_row(METRICS, name, key, goal, ok, fmt)

    return md_table(
        ["target", "goal", "measured", "status"],
        [
            row(
                "deep linear UFM full HVP (10, 200, 512, 6), vs fastest peer",
                "linear/512/False",
                "≥ 50×",
                lambda x: x >= 50,
            ),
            row(
                "ReLU UFM full HVP (10, 100, 256, 4): its GEMMs run alone over the product (flop-bound)",
                "relu/256/False/gemms_alone",
                "≥ 80%",
                lambda x: x >= 0.8,
                "{:.0%}",
            ),
            row(
                "ReLU UFM full HVP (10, 100, 256, 4), vs autograd cached (the same GEMMs: parity is the bound)",
                "relu/256/False/autograd cached (PyHessian)",
                "≥ 0.9×",
                lambda x: x >= 0.9,
            ),
            row(
                "ReLU UFM full HVP (10, 100, 256, 4), vs curvlinops",
                "relu/256/False/curvlinops",
                "≥ 2×",
                lambda x: x >= 2,
            ),
            row(
                "ReLU UFM matmat of 8: per-vector time (GEMMs of N = 1000 columns are already large: no loss)",
                "relu/256/False/matmat",
                "≥ 0.9×",
                lambda x: x >= 0.9,
            ),
            row(
                "top-20 eigenpairs (ReLU), vs scipy eigsh + autograd (cached graph): per-product parity, the gain "
                "is the product count",
                "eig_eigsh",
                "≥ 1×",
                lambda x: x >= 1,
            ),
            row(
                "top-20 eigenpairs (ReLU), vs hessian-eigenthings at 1e-6", "eig_eigenthings", "≥ 1×", lambda x: x >= 1
            ),
            row(
                "peak memory of one product / one training step", "memory_ratio", "≤ 1×", lambda x: x <= 1.0, "{:.2f}×"
            ),
        ],
    )


def run(quick: bool = False) -> str:
    hvp = md_table(
        ["model", "(K, n, d, L)", "blocks", "operator", "fastdnc ms", "% of matmul peak", "matmat-8 saving"]
        + [f"vs {c}" for c in PEER_COLUMNS]
        + ["vs fastest", "rel. error"],
        hvp_rows(quick),
    )
    eig = md_table(["method", "time", "vs fastdnc", "matvecs", "top-20 max rel. error"], eig_rows(quick))
    dens = md_table(["method", "time", "vs fastdnc"], density_rows(quick))
    mem = md_table(["model", "peak of one fastdnc full HVP", "peak of one training step", "ratio"], memory_rows())
    return (
        f"### Full HVP (float32)\n\n{hvp}\n\n### Top-20 Hessian eigenpairs (ReLU UFM, float64)\n\n{eig}\n\n"
        f"### Spectral density (SLQ)\n\n{dens}\n\n### Peak memory\n\n{mem}\n"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    print(run(a.quick))
    print(targets())
