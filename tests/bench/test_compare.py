"""Regressions by ratio (fastdnc.bench.compare): the ratio within each run, the noise band from the
spreads, the rows that moved; end to end, a product slowed through the testing hook is caught when
the suite runs twice (the only timing dependence is a 30× slowdown against a band of a few ×)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastdnc.bench import cases, compare, suite


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


def test_a_repeat_run_widens_each_band_to_twice_its_drift():
    old = {**OLD, "commit_info": {"id": "abc"}}
    rows = run_rows(OLD)
    rows[("a", "fastdnc")] = (1.2, 0.012)  # the same code ran 20% slower on this row in a second run
    repeat = {**run(rows), "commit_info": {"id": "abc"}}
    rows[("a", "fastdnc")] = (1.3, 0.013)  # the new run: 30% slower, beyond the 10% floor
    new = run(rows)
    assert {c.case: c.moved for c in compare.compare(old, new)} == {"layer/a": True, "layer/b": False}
    widened = {c.case: c for c in compare.compare(old, new, noise=compare.repeat_noise(old, repeat))}
    assert not widened["layer/a"].moved and widened["layer/a"].band == pytest.approx(1.2**2 - 1)
    assert widened["layer/b"].band == pytest.approx(compare.FLOOR)
    with pytest.raises(ValueError, match="a repeat must run the same code"):
        compare.repeat_noise(old, {**repeat, "commit_info": {"id": "def"}})
    with pytest.raises(ValueError, match="a repeat must run the same code"):  # neither says its commit
        compare.repeat_noise(OLD, run(rows))


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
    crafted["benchmarks"][0]["stats"] = {"median": 0.0}  # a ratio of 0 would end in log(0)
    with pytest.raises(ValueError, match="non-positive"):
        compare.ratios(crafted)


def run_suite(out: Path, monkeypatch, slowdown: str = "") -> None:
    monkeypatch.setenv(cases.SLOWDOWN_ENV, slowdown)
    suite.run(out, size="tiny", min_rounds=1, args=("-k", "full or train", "--benchmark-max-time=0.05"))


def test_the_command_catches_a_slowed_product(tmp_path, monkeypatch):
    run_suite(tmp_path / "old.json", monkeypatch)
    run_suite(tmp_path / "new.json", monkeypatch, "full=30")
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--new", "x.json"], "--new only goes with --compare OLD.json"),
        (["--new", "x.json", "--repeat", "y.json"], "--new and --repeat only go with --compare OLD.json"),
        (["--quick", "--compare", "x.json"], "--quick and --compare are two different runs: give one"),
    ],
)
def test_options_of_another_run_are_refused_before_anything_runs(args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "fastdnc", "bench", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stderr.strip() == f"fastdnc bench: error: {message}", proc.stderr
