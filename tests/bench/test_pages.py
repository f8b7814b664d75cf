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
    later = {**record, "measured_later": {"setup": {**MACHINE, "commit": "def5678"}}}
    run_all.render(later, tmp_path / "benchmarks.md")
    assert "Measured again later: `setup` at commit `def5678`" in (tmp_path / "benchmarks.md").read_text()
    del record["blocks"]["kernels"]
    with pytest.raises(SystemExit, match=r"lacks the blocks \['kernels'\]"):
        run_all.render(record, tmp_path / "benchmarks.md")


def test_the_committed_pages_are_what_the_committed_record_renders(tmp_path):
    record = json.loads(run_all.JSON.read_text())
    run_all.render(record, tmp_path / "benchmarks.md")
    for name in ("benchmarks.md", "distributed.md", "spectrum.md", "gpu.md"):
        assert (tmp_path / name).read_text() == (ROOT / "docs" / name).read_text(), name


def test_the_suite_page_is_what_the_kept_suite_json_renders():
    import suite_page

    source = "benchmarks/results/suite.json"
    page = suite_page.page(json.loads((ROOT / source).read_text()), source)
    assert page == (ROOT / "docs" / "bench-suite.md").read_text()
    assert suite_page.regime("kernels", 0.12, 0.7).startswith(
        "memory-bound at this size (fastdnc moves its bytes at 70%"
    )
    assert suite_page.regime("full", 0.8, 0.1).startswith("flop-bound at this size (fastdnc at 80%")
