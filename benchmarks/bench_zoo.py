"""The drop-in operators on a model zoo, side by side with autograd, torch.func and the peers.

Run alone: ``python benchmarks/bench_zoo.py`` (``make bench`` includes it in docs/benchmarks.md).
Models and data are fixed (seeded): a ReLU MLP 784-512-512-10 on 1024 samples, a CNN (two conv
layers, BatchNorm in eval mode, pooling, linear) on scikit-learn's 1797 digits, and a 2-layer
Transformer encoder classifier (d_model 64, 4 heads) on 256 random token sequences of length 32.
Cross-entropy loss, all parameters. Ratios are the baseline's time over fastdnc's (> 1: fastdnc is
faster), in float32 and float64:

* autograd cached: the gradient graph is built once (``create_graph=True``), each product is one
  more backward (PyHessian's and hessian-eigenthings' method);
* torch.func: ``jvp(grad)`` per product, no cache;
* curvlinops ``HessianLinearOperator`` and PyHessian's ``hessian_vector_product`` (peers extra).

"mode='linearize'" is the generic path with the traced Jacobian-vector product of the gradient (built
once, seconds), against cached autograd. "matmat 8" is the time of one product with 8 vectors over 8
single products. Memory is the peak
resident growth of building the operator and one product, over that of one training step
(forward, backward, SGD step), each in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table, median_time, target_row  # noqa: E402
from peak_memory import reset_peak, status_mib  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc.curvature.functional import autodiff_friendly_attention  # noqa: E402

METRICS: dict[str, float] = {}


class Encoder(nn.Module):
    def __init__(self, vocab: int = 100, d: int = 64, heads: int = 4, layers: int = 2, k: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True),
            layers,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(d, k)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.embed(tokens)).mean(1))


def zoo(dtype: torch.dtype) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    xm, ym = torch.randn(1024, 784, generator=g), torch.randint(0, 10, (1024,), generator=g)
    from sklearn.datasets import load_digits

    d = load_digits()
    xc = torch.from_numpy(d.images).float()[:, None] / 16.0
    yc = torch.from_numpy(d.target).long()
    cnn = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 16, 10),
    ).eval()
    enc = Encoder().eval()
    xt, yt = torch.randint(0, 100, (256, 32), generator=g), torch.randint(0, 10, (256,), generator=g)
    cast = lambda t: t.to(dtype) if t.is_floating_point() else t  # noqa: E731
    return {
        "ReLU MLP 784-512-512-10, 1024 samples": (mlp.to(dtype), cast(xm), ym),
        "CNN (2 conv, BN eval, pool) on digits, 1797 samples": (cnn.to(dtype), cast(xc), yc),
        "Transformer encoder (2 layers, d 64, 4 heads), 256×32 tokens": (enc.to(dtype), xt, yt),
    }


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for n, p in model.named_parameters() if not n.startswith("embed")]  # embedding rows: sparse


def _vectors(params, k: int, dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(*p.shape, k, generator=g, dtype=dtype) for p in params]


def methods(model, x, y, params):
    """name -> (single product, product with 8 vectors), each a thunk; None when not available."""
    loss = nn.CrossEntropyLoss()
    one = [v[..., 0] for v in _vectors(params, 1, params[0].dtype)]
    eight = _vectors(params, 8, params[0].dtype)
    flat1 = torch.cat([v.reshape(-1) for v in one])
    flat8 = torch.cat([v.reshape(-1, 8) for v in eight])
    out = {}
    op = fd.HessianOperator(model, loss, (x, y), params=params)
    out["fastdnc"] = (lambda: op @ flat1, lambda: op @ flat8)
    with autodiff_friendly_attention():
        grads = torch.autograd.grad(loss(model(x), y), params, create_graph=True)

    def cached(vs):
        with autodiff_friendly_attention():
            return torch.autograd.grad(grads, params, vs, retain_graph=True)

    out["autograd cached"] = (lambda: cached(one), lambda: [cached([v[..., j] for v in eight]) for j in range(8)])
    func = fd.HessianOperator(
        model, loss, (x, y), params=params, fused=False, check_deterministic=False, mode="forward-over-reverse"
    )  # jvp(grad) recomputed per product
    out["torch.func"] = (lambda: func @ flat1, lambda: [func @ flat8[:, j] for j in range(8)])
    if not op.fused:
        lin = fd.HessianOperator(model, loss, (x, y), params=params, mode="linearize", check_deterministic=False)
        lin @ flat1  # traced once
        out["fastdnc linearize"] = (lambda: lin @ flat1, None)
    else:
        out["fastdnc linearize"] = "fused path"
    try:
        from curvlinops import HessianLinearOperator

        cl = HessianLinearOperator(model, loss, params, [(x, y)], check_deterministic=False)
        cl @ flat1
        out["curvlinops"] = (lambda: cl @ flat1, lambda: cl @ flat8)
    except Exception as e:  # noqa: BLE001 - a failing peer is a result
        out["curvlinops"] = f"fails: {type(e).__name__}: {str(e).splitlines()[0][:60]}"
    try:
        from pyhessian.hessian import hessian as ph
        from pyhessian.utils import hessian_vector_product

        with autodiff_friendly_attention(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = ph(model, loss, data=(x, y), cuda=False)
        # PyHessian differentiates every parameter; the benchmark's subset is all but the embedding
        sel = [i for i, p in enumerate(h.params) if any(p is q for q in params)]
        gh, ps = [h.gradsH[i] for i in sel], [h.params[i] for i in sel]
        out["PyHessian"] = (lambda: hessian_vector_product(gh, ps, one), None)
    except Exception as e:  # noqa: BLE001
        out["PyHessian"] = f"fails: {type(e).__name__}: {str(e).splitlines()[0][:60]}"
    return out


def _peak(job: str, name: str, dtype: str) -> float:
    proc = subprocess.run(
        [sys.executable, __file__, "--job", job, name, dtype], capture_output=True, text=True, check=True
    )
    return float(proc.stdout.strip().splitlines()[-1])


def memory_job(job: str, name: str, dtype: str) -> float:
    torch.set_default_dtype(torch.float32)
    model, x, y = zoo(getattr(torch, dtype))[name]
    params = _params(model)
    loss = nn.CrossEntropyLoss()
    flat = torch.cat([v[..., 0].reshape(-1) for v in _vectors(params, 1, params[0].dtype)])
    reset_peak()
    base = status_mib("VmRSS")
    if job == "train":
        opt = torch.optim.SGD(params, lr=0.01)
        loss(model(x), y).backward()
        opt.step()
    else:
        fd.HessianOperator(model, loss, (x, y), params=params) @ flat
    return status_mib("VmHWM") - base


def run(dtypes=(torch.float32, torch.float64)) -> str:
    rows = []
    for dtype in dtypes:
        tag = str(dtype).replace("torch.", "")
        for name, (model, x, y) in zoo(dtype).items():
            params = _params(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ms = methods(model, x, y, params)
                t1 = median_time(ms["fastdnc"][0], min_time=1.0, repeats=5)
                t8 = median_time(ms["fastdnc"][1], min_time=1.0, repeats=5)
                cells = {}
                for peer in ("autograd cached", "torch.func", "curvlinops", "PyHessian", "fastdnc linearize"):
                    m = ms[peer]
                    if isinstance(m, str):
                        cells[peer] = m
                        continue
                    ratio = median_time(m[0], min_time=1.0, repeats=5) / t1
                    METRICS[f"{name}|{tag}|{peer}"] = ratio
                    cells[peer] = f"{ratio:.2f}×"
                if not isinstance(ms["fastdnc linearize"], str):
                    base = METRICS[f"{name}|{tag}|autograd cached"] * t1  # the cached-autograd time
                    lin = METRICS.pop(f"{name}|{tag}|fastdnc linearize") * t1
                    METRICS[f"{name}|{tag}|linearize vs autograd cached"] = base / lin
                    cells["fastdnc linearize"] = f"{base / lin:.2f}×"
            METRICS[f"{name}|{tag}|matmat8"] = t8 / (8 * t1)
            mem = _peak("product", name, tag) / max(_peak("train", name, tag), 1e-9)
            METRICS[f"{name}|{tag}|memory"] = mem
            rows.append([name, tag, f"{t1 * 1e3:.1f} ms", *cells.values(), f"{t8 / (8 * t1):.2f}", f"{mem:.2f}"])
    return md_table(
        [
            "model",
            "dtype",
            "fastdnc, one product",
            "autograd cached",
            "torch.func",
            "curvlinops",
            "PyHessian",
            "mode='linearize' vs autograd cached",
            "matmat 8 / (8 × one)",
            "memory / training step",
        ],
        rows,
    )


def cache_check(dtypes=(torch.float32, torch.float64)) -> str:
    """What proving a cache costs: the snapshot check that every product runs (the model's structure
    and every parameter and buffer compared bit for bit with a copy, fastdnc.curvature.model_state)
    against the product itself, on the zoo."""
    from fastdnc.curvature.model_state import ModelSnapshot

    rows = []
    for dtype in dtypes:
        tag = str(dtype).replace("torch.", "")
        for name, (model, x, y) in zoo(dtype).items():
            params = _params(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                op = fd.HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=params)
            flat = torch.cat([v[..., 0].reshape(-1) for v in _vectors(params, 1, params[0].dtype)])
            product = median_time(lambda: op @ flat, min_time=1.0, repeats=5)
            snap = ModelSnapshot(model, [x, y])
            check = median_time(lambda: snap.matches(model, [x, y]), min_time=0.5, repeats=5)
            size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
            METRICS[f"{name}|{tag}|cache check"] = check / product
            rows.append(
                [
                    name,
                    tag,
                    f"{size / 2**10:,.0f} KiB",
                    f"{check * 1e3:.3f} ms",
                    f"{product * 1e3:.1f} ms",
                    f"{100 * check / product:.2f}%",
                ]
            )
    return md_table(
        ["model", "dtype", "parameters + buffers", "snapshot check", "one product", "check / product"], rows
    )


def targets() -> str:
    mlp, cnn, tf = list(zoo(torch.float32))
    rows = []
    for tag in ("float32", "float64"):
        rows += [
            target_row(
                METRICS,
                f"MLP vs autograd cached ({tag}; flop-bound, the same GEMMs: parity is the bound)",
                f"{mlp}|{tag}|autograd cached",
                "≥ 0.9×",
                lambda r: r >= 0.9,
            ),
            target_row(METRICS, f"MLP vs curvlinops ({tag})", f"{mlp}|{tag}|curvlinops", "≥ 2×", lambda r: r >= 2),
            target_row(
                METRICS,
                f"CNN vs autograd cached ({tag}; the same convolutions and GEMMs)",
                f"{cnn}|{tag}|autograd cached",
                "≥ 0.9×",
                lambda r: r >= 0.9,
            ),
            target_row(METRICS, f"CNN vs curvlinops ({tag})", f"{cnn}|{tag}|curvlinops", "≥ 1.5×", lambda r: r >= 1.5),
            target_row(
                METRICS,
                f"Transformer vs autograd cached ({tag})",
                f"{tf}|{tag}|autograd cached",
                "≥ 1.0×",
                lambda r: r >= 1.0,
            ),
            target_row(
                METRICS,
                f"MLP matmat 8, per vector ({tag}; nothing is shared between vectors once the forward state "
                "is cached: no loss is the bound)",
                f"{mlp}|{tag}|matmat8",
                "≤ 1.1",
                lambda r: r <= 1.1,
                "{:.2f}",
            ),
            target_row(
                METRICS,
                f"CNN matmat 8, per vector ({tag}; nothing is shared between vectors once the forward state "
                "is cached: no loss is the bound)",
                f"{cnn}|{tag}|matmat8",
                "≤ 1.1",
                lambda r: r <= 1.1,
                "{:.2f}",
            ),
        ]
        rows += [
            target_row(
                METRICS,
                f"memory of one product, {m.split(',')[0]} ({tag})",
                f"{m}|{tag}|memory",
                "≤ 2× a training step",
                lambda r: r <= 2,
                "{:.2f}×",
            )
            for m in (mlp, cnn, tf)
        ]
    return md_table(["target", "goal", "measured", "status"], rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--job":
        print(memory_job(*sys.argv[2:5]))
    else:
        print(run())
        print()
        print(cache_check())
        print()
        print(targets())
        print(json.dumps(METRICS, indent=1))
