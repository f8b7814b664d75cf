"""Regressions by ratio (fastdnc.bench.compare): the ratio within each run, the noise band from the
spreads, the rows that moved; end to end, a product slowed through the testing hook is caught when
the suite runs twice (the only timing dependence is a 30× slowdown against a band of a few ×)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdnc.bench import compare

ROOT = Path(__file__).resolve().parents[2]


def run(rows: dict[tuple[str, str], tuple[float, float]]) -> dict:
    """A pytest-benchmark JSON with {(case, impl): (median, iqr)} in group "layer"."""
    return {
        "benchmarks": [
            {
                "extra_info": {"group": "layer", "case": case, "impl": impl},
                "stats": {"median": median, "iqr": iqr},
            }
            for (case, impl), (median, iqr) in rows.items()
        ]
    }


OLD = run(
    {
        ("a", "fastdnc"): (1.0, 0.01),
        ("a", "autograd"): (4.0, 0.04),
        ("b", "fastdnc"): (2.0, 0.02),
        ("b", "autograd"): (2.0, 0.02),
    }
)


def test_a_machine_that_is_twice_as_fast_moves_nothing():
    faster = run({key: (median / 2, iqr / 2) for key, (median, iqr) in run_rows(OLD).items()})
    changes = compare.compare(OLD, faster)
    assert len(changes) == 2 and not any(c.moved for c in changes)
    assert "none moved beyond its noise band" in compare.report(changes)


def run_rows(data: dict) -> dict:
    return {
        (b["extra_info"]["case"], b["extra_info"]["impl"]): (b["stats"]["median"], b["stats"]["iqr"])
        for b in data["benchmarks"]
    }


def test_a_slower_product_is_reported_and_noise_widens_the_band():
    rows = run_rows(OLD)
    rows[("a", "fastdnc")] = (1.5, 0.015)  # 1.5× slower against the same baseline
    changes = {c.case: c for c in compare.compare(OLD, run(rows))}
    assert changes["layer/a"].moved and changes["layer/a"].factor == pytest.approx(1.5)
    assert not changes["layer/b"].moved
    text = compare.report(list(changes.values()))
    assert "layer/a | autograd | 0.25 | 0.375 | 1.50× (slower) | ±10% |" in text
    rows[("a", "fastdnc")] = (1.5, 0.9)  # the same change inside a wide spread is not a regression
    assert not {c.case: c for c in compare.compare(OLD, run(rows))}["layer/a"].moved
    json.loads(compare.dumps(list(changes.values())))


def test_failed_peers_and_foreign_files_are_handled(tmp_path):
    data = run_rows(OLD)
    failed = run(data)
    failed["benchmarks"][1]["extra_info"]["failed"] = "curvlinops is not installed"
    assert [c.case for c in compare.compare(OLD, failed)] == ["layer/b"]
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a JSON object"):
        compare.load(bad)
    bad.write_text('{"machine_info": {}}')
    with pytest.raises(ValueError, match="not a pytest-benchmark JSON"):
        compare.load(bad)
    crafted = {"benchmarks": [{"extra_info": {"group": "layer", "case": "a", "impl": "fastdnc"}, "stats": {}}]}
    with pytest.raises(ValueError, match="benchmark 0 of the results is not one the suite wrote"):
        compare.ratios(crafted)
    crafted["benchmarks"][0]["stats"] = {"median": float("nan")}
    with pytest.raises(ValueError, match="non-finite"):
        compare.ratios(crafted)


def suite(out: Path, slowdown: str = "") -> None:
    env = {**os.environ, "FASTDNC_BENCH_SIZE": "tiny", "FASTDNC_BENCH_SLOWDOWN": slowdown}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "benchmarks" / "test_benchmarks.py"),
        "-k",
        "full or train",
        "--benchmark-max-time=0.05",
        f"--benchmark-json={out}",
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)


def test_the_command_catches_a_slowed_product(tmp_path):
    suite(tmp_path / "old.json")
    suite(tmp_path / "new.json", "full=30")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdnc",
            "bench",
            "--compare",
            str(tmp_path / "old.json"),
            "--new",
            str(tmp_path / "new.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    moved = [line for line in proc.stdout.splitlines() if line.startswith("| full/")]
    assert moved and all("(slower)" in line for line in moved), proc.stdout
    assert not any(
        line.startswith("| train/") and "slower" in line and "30" in line for line in proc.stdout.splitlines()
    )
