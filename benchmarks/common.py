"""Shared timing helpers for the benchmark scripts: medians of repeated runs, matmul roofline."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastdnc.bench.timing import matmul_peak, median_time  # noqa: F401 - the scripts' timer, re-exported


def md_table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def target_row(metrics: dict[str, float], name: str, key: str, goal: str, ok, fmt: str = "{:.2f}×") -> list[str]:
    """A row of a targets table: the measured value of ``key`` and whether ``ok(value)`` holds."""
    if key not in metrics:
        return [name, goal, "not measured (--quick)", ""]
    return [name, goal, fmt.format(metrics[key]), "met" if ok(metrics[key]) else "**missed**"]


class PeerFailure(str):
    """A peer that raised: its cell reads ``failed: <error>`` instead of the peer being dropped."""


def peer_failure(peer: str, error: BaseException) -> PeerFailure:
    """Report a failing peer on stderr and return the cell text that shows it in the table."""
    text = " ".join(f"{type(error).__name__}: {error}".split())[:100]
    print(f"{peer} failed: {text}", file=sys.stderr)
    return PeerFailure(f"failed ({text})")


def ratio_cell(value: float | PeerFailure | None, base: float, fmt: str = "{:.1f}×") -> str:
    """``value / base`` formatted, a peer's failure as its text, ``—`` where it does not apply."""
    if isinstance(value, PeerFailure):
        return str(value)
    return "—" if value is None else fmt.format(value / base)


def timed(times: dict) -> dict[str, float]:
    """The entries of ``times`` that are measurements (not failures)."""
    return {k: v for k, v in times.items() if isinstance(v, float)}


_COMMANDS: dict[tuple[str, ...], tuple[float, dict]] = {}


def command_run(args: list[str], again: bool = False) -> tuple[float, dict]:
    """Wall time and ``results.json`` of ``fastdnc ARGS --out FRESH_FOLDER --quiet`` in a fresh process,
    measured once per benchmark run and shared by the blocks that report it (the real-data block and
    the loaded-machine block both time the real presets alone); ``again``: measure anew (e.g. beside
    a busy core)."""
    key = tuple(args)
    if again or key not in _COMMANDS:
        with tempfile.TemporaryDirectory() as folder:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fastdnc", *args, "--out", folder, "--quiet"], check=True)
            wall = time.perf_counter() - t0
            results = json.loads((Path(folder) / "results.json").read_text())
        if again:
            return wall, results
        _COMMANDS[key] = (wall, results)
    return _COMMANDS[key]
