"""The generated benchmark pages come from the kept run record alone: ``benchmarks/run_all.py``
renders every block of a record into ``docs/benchmarks.md`` and its sibling pages, refuses a record
that lacks a block, and the committed pages are exactly what the committed record renders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import run_all  # noqa: E402

MACHINE = {"cpu": "x86_64", "threads": "2", "torch": "2", "python": "3", "commit": "abc1234", "date": "2026-12-06"}


def test_every_block_of_a_record_lands_on_its_page(tmp_path):
    record = {"machine": MACHINE, "blocks": {name: f"<{name}>" for name in run_all.BLOCKS}}
    run_all.render(record, tmp_path / "benchmarks.md")
    page = (tmp_path / "benchmarks.md").read_text()
    on_main = set(run_all.BLOCKS) - {"distributed", "spectrum", "spectrum_tolerance", "gpu_page"}
    assert all(f"<{name}>" in page for name in on_main) and "at commit `abc1234` on 2026-12-06" in page
    assert "<spectrum>" in (spectrum := (tmp_path / "spectrum.md").read_text()) and "<spectrum_tolerance>" in spectrum
    assert (tmp_path / "gpu.md").read_text() == "<gpu_page>"
    assert "<distributed>" in page and "<distributed>" in (tmp_path / "distributed.md").read_text()
    apart = {**record, "measured_apart": {"setup": {**MACHINE, "commit": "def5678"}}}
    run_all.render(apart, tmp_path / "benchmarks.md")
    assert "Measured in another run: `setup` at commit `def5678`" in (tmp_path / "benchmarks.md").read_text()
    del record["blocks"]["kernels"]
    with pytest.raises(SystemExit, match=r"lacks the blocks \['kernels'\]"):
        run_all.render(record, tmp_path / "benchmarks.md")


def test_a_record_says_which_run_measured_each_block(monkeypatch):
    runs = iter([{**MACHINE, "commit": f"run{i}"} for i in range(3)])
    monkeypatch.setattr(run_all, "machine", lambda: next(runs))
    monkeypatch.setattr(run_all, "BLOCKS", {"setup": lambda: "s", "train": lambda: "t", "zoo": lambda: "z"})
    first = run_all.measure(["train", "zoo", "setup"])  # make bench on a fresh checkout: every block
    assert (
        first["machine"]["commit"] == "run0"
        and first["measured_apart"] == {}
        and set(first["seconds"])
        == {
            "setup",
            "train",
            "zoo",
        }
    )
    again = run_all.measure(["zoo"], first)  # one section again: the record keeps its run, zoo is apart
    assert again["machine"]["commit"] == "run0" and again["measured_apart"] == {"zoo": {**MACHINE, "commit": "run1"}}
    bench = run_all.measure(["train", "zoo"], again)  # make bench: all but the set-up cost, which is kept
    assert bench["machine"]["commit"] == "run2" and bench["blocks"]["setup"] == "s"
    assert bench["measured_apart"] == {"setup": {**MACHINE, "commit": "run0"}}
    bench["seconds"].update(suite=120.0, train=30.0, zoo=90.0, setup=480.0)
    assert run_all.took(bench["seconds"]) == (
        "\n`make bench` took 4.0 min on this machine: the pytest-benchmark suite 2.0 min, the blocks of these "
        "pages 2.0 min (the longest, in minutes: `zoo` 1.5, `train` 0.5); measured apart: `setup` 8.0 min."
    )


def test_the_committed_pages_are_what_the_committed_record_renders(tmp_path):
    record = json.loads(run_all.JSON.read_text())
    run_all.render(record, tmp_path / "benchmarks.md")
    for name in ("benchmarks.md", "distributed.md", "spectrum.md", "gpu.md"):
        assert (tmp_path / name).read_text() == (ROOT / "docs" / name).read_text(), name


def test_the_suite_page_is_what_the_kept_suite_json_renders():
    import suite_page

    assert run_all.suite_page_text() == (ROOT / "docs" / "bench-suite.md").read_text()
    assert suite_page.regime("kernels", 0.12, 0.7).startswith(
        "memory-bound at this size (fastdnc moves its bytes at 70%"
    )
    assert suite_page.regime("full", 0.8, 0.1).startswith("flop-bound at this size (fastdnc at 80%")


def test_the_suite_page_shows_the_drift_of_a_repeat_of_the_same_commit_only(tmp_path):
    data = json.loads(run_all.SUITE.read_text())
    repeat = json.loads(run_all.SUITE.read_text())
    for b in repeat["benchmarks"]:
        if b["extra_info"]["impl"] == "fastdnc" and b["stats"]:
            b["stats"]["median"] *= 1.25  # every ratio 25% higher in the second run
    (tmp_path / "suite.json").write_text(json.dumps(data))
    (tmp_path / "repeat.json").write_text(json.dumps(repeat))
    page = run_all.suite_page_text(tmp_path / "suite.json", tmp_path / "repeat.json")
    assert "**Drift** is how far the same ratio moved" in page and "| 25% |" in page
    repeat["commit_info"] = {**repeat.get("commit_info", {}), "id": "another"}
    (tmp_path / "repeat.json").write_text(json.dumps(repeat))
    page = run_all.suite_page_text(tmp_path / "suite.json", tmp_path / "repeat.json")
    assert "**Drift**" not in page and "| 25% |" not in page
