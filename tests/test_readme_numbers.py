"""The README types no measurement: every speed-up (``2.3×``), percentage and duration it states must
appear verbatim in a page that a command regenerates (docs/*.md), so it cannot drift from the
latest benchmark run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENT = re.compile(r"\b\d+(?:\.\d+)?(?:×|%|\s?(?:ms|s|min|minutes|seconds|hours|[KMG]i?B)\b)")
GENERATED = ["benchmarks.md", "distributed.md", "memory.md", "drop-in.md", "spectrum.md", "theory-vs-measurement.md"]


def _claims(text: str) -> list[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # commands are not claims
    return sorted(set(MEASUREMENT.findall(prose)))


def test_every_number_in_the_readme_comes_from_a_generated_page():
    generated = "\n".join((ROOT / "docs" / name).read_text() for name in GENERATED)
    missing = [claim for claim in _claims((ROOT / "README.md").read_text()) if claim not in generated]
    assert not missing, f"README numbers that no generated page holds (regenerate or link instead): {missing}"


def test_the_pattern_finds_typed_numbers():
    assert _claims("faster (2.3× here, 97% there, in 1.5 s and 3 minutes) but not 8 × 8") == [
        "1.5 s",
        "2.3×",
        "3 minutes",
        "97%",
    ]
