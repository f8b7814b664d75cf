r"""Regressions by ratio: ``fastdnc bench --compare OLD.json`` and ``make bench-compare``.

Two runs of the pytest-benchmark suite (``benchmarks/test_benchmarks.py``, ``--benchmark-json``)
are compared through **ratios measured within each run**: for every case, fastdnc's median time
over each baseline's median time (a faster or slower machine moves both). A row is reported when
its ratio moved by more than the noise band

.. math:: \beta = \max\bigl(\beta_0,\; 3\sqrt{s_\text{old}^2 + s_\text{new}^2}\bigr),

with :math:`s` the relative spread of a ratio in one run (the interquartile ranges of its two
timings over their medians, added in quadrature) and :math:`\beta_0` a floor (10% by default):
a change counts when :math:`|\log(r_\text{new}/r_\text{old})| > \log(1+\beta)`.

Rounds within one run share the machine's state of that moment (its load, the thread count chosen
for it), so a ratio also drifts **between** runs of the same code. Given a second run of the suite
at the old run's commit (``--repeat``, ``make bench-repeat``), each row's band is widened to at
least :data:`REPEAT_FACTOR` times the drift of its ratio between those two runs:
:math:`\log(1+\beta) \ge 2\,|\log(r_\text{repeat}/r_\text{old})|`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..safe_read import read_json

FLOOR = 0.10
#: a row's band is at least this many times (in log space) its ratio's drift between two runs of
#: the same commit
REPEAT_FACTOR = 2.0


@dataclass
class Ratio:
    """fastdnc's median over one baseline's, and its relative spread."""

    value: float
    spread: float


@dataclass
class Change:
    case: str
    baseline: str
    old: Ratio
    new: Ratio
    band: float

    @property
    def factor(self) -> float:
        """new / old ratio: above 1 means fastdnc became slower relative to the baseline."""
        return self.new.value / self.old.value

    @property
    def moved(self) -> bool:
        return abs(math.log(self.factor)) > math.log1p(self.band)


def ratios(run: dict) -> dict[tuple[str, str], Ratio]:
    """``{(case key, baseline): Ratio}`` of one pytest-benchmark JSON (failed peers left out)."""
    timings: dict[str, dict[str, tuple[float, float]]] = {}
    for i, b in enumerate(run.get("benchmarks", [])):
        try:
            info = b.get("extra_info", {})
            if "failed" in info or "case" not in info or "impl" not in info:
                continue
            median = float(b["stats"]["median"])
            spread = float(b["stats"].get("iqr", 0.0)) / median if median > 0 else 0.0
            key = f"{info['group']}/{info['case']}"
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"benchmark {i} of the results is not one the suite wrote ({e!r})") from None
        if not (math.isfinite(median) and math.isfinite(spread) and median > 0):
            raise ValueError(f"benchmark {i} of the results has a non-positive or non-finite median or spread")
        timings.setdefault(key, {})[str(info["impl"])] = (median, spread)
    out = {}
    for key, impls in timings.items():
        if "fastdnc" not in impls:
            continue
        ours, s_ours = impls["fastdnc"]
        for name, (median, spread) in impls.items():
            if name != "fastdnc":
                out[(key, name)] = Ratio(ours / median, math.hypot(s_ours, spread))
    return out


def drift(first: dict, second: dict) -> dict[tuple[str, str], float]:
    """``|log(r_second / r_first)|`` of every ratio in both runs: how far it moved between them."""
    a, b = ratios(first), ratios(second)
    return {key: abs(math.log(b[key].value / a[key].value)) for key in a.keys() & b.keys()}


def commit_of(run: dict) -> str | None:
    """The commit a suite run measured (pytest-benchmark's ``commit_info.id``), if it says."""
    info = run.get("commit_info")
    return info.get("id") if isinstance(info, dict) else None


def repeat_noise(old: dict, repeat: dict) -> dict[tuple[str, str], float]:
    """Each ratio's drift between ``old`` and ``repeat``, a second run of the suite at ``old``'s commit
    (a ValueError when the repeat ran other code: its drift would include the code's changes)."""
    if commit_of(old) is None or commit_of(repeat) != commit_of(old):
        said = [
            f"the {name} run {'does not say its commit' if c is None else f'is of commit {c}'}"
            for name, c in (("repeat", commit_of(repeat)), ("old", commit_of(old)))
        ]
        raise ValueError(
            f"{said[0]}, {said[1]}: a repeat must run the same code (make bench-repeat right after make bench)"
        )
    return drift(old, repeat)


def compare(
    old: dict, new: dict, floor: float = FLOOR, noise: dict[tuple[str, str], float] | None = None
) -> list[Change]:
    """Every (case, baseline) present in both runs, with its noise band, widened to at least
    :data:`REPEAT_FACTOR` times its between-run drift in ``noise`` (:func:`repeat_noise`)."""
    noise = noise or {}
    a, b = ratios(old), ratios(new)
    return [
        Change(
            key[0],
            key[1],
            a[key],
            b[key],
            max(floor, 3 * math.hypot(a[key].spread, b[key].spread), math.expm1(REPEAT_FACTOR * noise.get(key, 0.0))),
        )
        for key in sorted(a.keys() & b.keys())
    ]


def load(path: str | Path) -> dict:
    """A pytest-benchmark JSON file (strict JSON, size-checked)."""
    data = read_json(path, "benchmark results")
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")
    return data


def report(changes: list[Change]) -> str:
    """The rows that moved beyond their noise band (slower first), or a line saying none did."""
    moved = sorted((c for c in changes if c.moved), key=lambda c: -c.factor)
    head = f"{len(changes)} ratios compared (fastdnc over each baseline, per run); "
    if not moved:
        return head + "none moved beyond its noise band."
    lines = [
        head + f"{len(moved)} moved beyond their noise band:",
        "",
        "| case | baseline | old ratio | new ratio | change | noise band |",
        "|---|---|---|---|---|---|",
    ]
    for c in moved:
        word = "slower" if c.factor > 1 else "faster"
        lines.append(
            f"| {c.case} | {c.baseline} | {c.old.value:.3g} | {c.new.value:.3g} | "
            f"{c.factor:.2f}× ({word}) | ±{c.band:.0%} |"
        )
    return "\n".join(lines)


def dumps(changes: list[Change]) -> str:
    """The comparison as strict JSON."""
    rows = [
        {
            "case": c.case,
            "baseline": c.baseline,
            "old": c.old.value,
            "new": c.new.value,
            "factor": c.factor,
            "band": c.band,
            "moved": c.moved,
        }
        for c in changes
    ]
    return json.dumps(rows, allow_nan=False, indent=1)
