"""Command line: help, train (with resume), reproduce, clear errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastdnc.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "reproduce" in out and "train" in out


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "fastdnc", "train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--weight-decay" in proc.stdout


def test_train_writes_history_checkpoint_and_resumes(tmp_path):
    args = ["train", "--steps", "200", "--width", "6", "--depth", "3", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["step"][0] == 0 and hist["step"][-1] == 200 and "nc1/l1" in hist
    assert (tmp_path / "checkpoint.pt").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["collapse"]["layers"]) == 4
    # extending the run resumes from the checkpoint: the history keeps its first 200 steps
    assert main(args[:2] + ["400"] + args[3:]) == 0
    hist2 = json.loads((tmp_path / "history.json").read_text())
    assert hist2["step"][: len(hist["step"])] == hist["step"] and hist2["step"][-1] == 400


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    assert main(["train", "--classes", "9", "--width", "4", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: width d=4 must be >= num_classes K=9" in err and "Traceback" not in err


def test_spectrum_of_a_trained_run(tmp_path, capsys):
    assert main(["train", "--steps", "20000", "--out", str(tmp_path), "--quiet"]) == 0
    assert main(["spectrum", "--run", str(tmp_path), "-k", "20"]) == 0
    out = capsys.readouterr().out
    assert "16 outliers (expected at DNC: 16)" in out
    res = json.loads((tmp_path / "spectrum.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert [row["outliers"] for row in res["layers"]][1:3] == [16, 16]
    assert res["model"]["outliers"] == 16 and res["model"]["overlap_top_k2"] > 1 - 1e-6
    assert (tmp_path / "spectrum.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["spectrum", "--run", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "is missing" in capsys.readouterr().err


def test_every_option_says_what_it_does_and_help_imports_no_torch():
    from fastdnc.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        silent = [a.option_strings for a in sub._actions if a.option_strings and not a.help]
        assert not silent, (name, silent)
    code = "import sys, fastdnc.cli; fastdnc.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_the_library_says_when_it_resumes(tmp_path, caplog):
    import logging

    import fastdnc as fd

    ck = tmp_path / "run.ckpt"
    fd.train(fd.DeepUFM(3, 2, 4, 2), 10, 0.1, checkpoint=ck, progress=False)
    with caplog.at_level(logging.INFO, logger="fastdnc"):
        fd.train(fd.DeepUFM(3, 2, 4, 2), 20, 0.1, checkpoint=ck, progress=False)
    assert "resumed from step 10" in caplog.text and "training to step 20" in caplog.text


def test_the_presets_help_states_the_times_the_generated_pages_measured():
    import re
    from pathlib import Path

    from fastdnc.cli.parser import paper_time, quick_time

    docs = Path(__file__).resolve().parents[2] / "docs"
    quick = re.search(r"^\| alone \| ([0-9.]+ s) \|", (docs / "benchmarks.md").read_text(), re.M).group(1)
    paper = int(re.search(r"this session ([0-9]+) s", (docs / "theory-vs-measurement.md").read_text()).group(1))
    assert quick_time().startswith(quick) and paper_time().startswith(f"{paper / 60:.0f} minutes")
