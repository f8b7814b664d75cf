"""``fastdnc reproduce --preset quick``: the README's main job, end to end."""

from __future__ import annotations

import json

import pytest

from fastdnc.cli import main


def test_quick_preset_writes_report_figures_and_results(tmp_path):
    assert main(["reproduce", "--preset", "quick", "--out", str(tmp_path), "--quiet"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    lin = res["linear_ufm"]
    assert abs(lin["measured"]["loss_gap"]) < 1e-8
    assert lin["measured"]["singular_value_rel_error"] < 1e-6
    report = (tmp_path / "report.md").read_text()
    for name in lin["figures"].values():
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"]({name})" in report
    assert "| loss |" in report


def test_unknown_preset_is_refused():
    with pytest.raises(SystemExit):
        main(["reproduce", "--preset", "nope"])
