"""The real-paper preset (fastdnc.experiments.real_paper) on tiny settings: records over training that
survive an interruption (earlier records read back, training resumed from the checkpoint), one
configuration per folder, the report's sections, and the page section that the synthetic presets keep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from fastdnc.data import DataError
from fastdnc.experiments import real_paper as rp

TINY = replace(rp.PAPER, dataset="digits", n_per_class=None, width=8, steps=12, batch_size=64)


@pytest.mark.parametrize("steps, count", [(1500, 6), (12, 3), (5, 6), (0, 2), (7, 1)])
def test_record_steps_start_at_zero_end_at_the_last_step_and_are_denser_early(steps, count):
    got = rp.record_steps(steps, count)
    assert got == sorted(set(got)) and got[-1] == steps and (count < 2 or got[0] == 0) and len(got) <= count
    gaps = [b - a for a, b in zip(got, got[1:])]
    assert gaps == sorted(gaps)


def test_records_survive_an_interruption_and_the_folder_keeps_one_configuration(tmp_path):
    out = tmp_path / "run"
    first = rp.run_over_training(TINY, out, records=3, analysis_per_class=6, progress=False)
    steps = [r["step"] for r in first["records"]]
    assert steps == rp.record_steps(12, 3) and first["analysis_samples"] == 60
    assert first["analysis"] == first["records"][-1] and first["analysis"]["model"] is not None
    # an interruption before the last record: its file is missing, the earlier ones are read back
    last = out / "records" / f"step_{steps[-1]:06d}.json"
    kept = (out / "records" / f"step_{steps[0]:06d}.json").read_text()
    last.unlink()
    again = rp.run_over_training(TINY, out, records=3, analysis_per_class=6, progress=False)
    assert (out / "records" / f"step_{steps[0]:06d}.json").read_text() == kept
    assert again["records"][:-1] == first["records"][:-1] and last.exists()
    assert again["train_accuracy"] == first["train_accuracy"]  # the same trained weights, from the checkpoint
    assert json.loads(last.read_text())["layers"] == json.loads(json.dumps(first["records"][-1]["layers"]))
    # a crafted or damaged record is refused in one line, never half-read
    kept_path = out / "records" / f"step_{steps[0]:06d}.json"
    kept_path.write_text('{"layers": [{"name": 1}]}')
    with pytest.raises(DataError, match="is not a record this preset wrote"):
        rp.run_over_training(TINY, out, records=3, analysis_per_class=6, progress=False)
    kept_path.write_text("[1, 2")
    with pytest.raises(ValueError, match="real-paper record .* is not valid JSON"):
        rp.run_over_training(TINY, out, records=3, analysis_per_class=6, progress=False)
    kept_path.write_text(kept)
    with pytest.raises(DataError, match=r"other settings \(steps\)"):
        rp.run_over_training(replace(TINY, steps=20), out, records=3, analysis_per_class=6, progress=False)
    report = rp.report({**again, "wall_seconds": 1.0, "threads": 1}, "cmd")
    assert "### Over training" in report and "### The verdict at the last record" in report
    assert all(name in report for name in again["figures"].values())
    assert all((out / name).exists() for name in again["figures"].values())


def test_the_real_data_section_is_spliced_into_a_page_and_kept():
    page = rp.splice("# Theory\n\nsynthetic tables\n", "## Real data\n\nfirst")
    assert page.startswith("# Theory") and rp.real_section(page).count("first") == 1
    page = rp.splice(page, "## Real data\n\nsecond")
    assert "first" not in page and "second" in rp.real_section(page) and page.count(rp.MARK_BEGIN) == 1
    assert rp.real_section("# no section") == ""


def test_the_command_needs_the_mnist_file_and_says_so_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fastdnc", "reproduce", "--preset", "real-paper", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
        timeout=120,
    )
    assert proc.returncode == 2 and "make data" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "records").exists()
    with pytest.raises(ValueError, match="--model cnn or resnet20, not 'mlp'"):
        rp.reproduce_real_paper(tmp_path / "o", "data", model="mlp")
