"""Shared timing helpers for the benchmark scripts: medians of repeated runs, matmul roofline."""

from __future__ import annotations

import sys

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
