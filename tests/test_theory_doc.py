"""Every "§" the code, the README and the generated pages cite resolves to a section of docs/theory.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITE = re.compile(r"§\s?(\d+(?:\.\d+)?)(?:\s?[–-]\s?(\d+(?:\.\d+)?))?")


def sections() -> set[str]:
    text = (ROOT / "docs" / "theory.md").read_text()
    return set(re.findall(r"^## (\d+)\.", text, re.M)) | set(re.findall(r"^### (\d+\.\d+)", text, re.M))


def citations() -> dict[str, set[str]]:
    """{cited section: the files that cite it}; a range §3.1–3.7 cites both ends."""
    files = [*ROOT.glob("fastdnc/**/*.py"), *ROOT.glob("benchmarks/*.py"), ROOT / "README.md", *ROOT.glob("docs/*.md")]
    out: dict[str, set[str]] = {}
    for path in files:
        for first, last in CITE.findall(path.read_text()):
            for sec in filter(None, (first, last)):
                out.setdefault(sec, set()).add(str(path.relative_to(ROOT)))
    return out


def test_every_cited_section_exists():
    have = sections()
    missing = {sec: sorted(where) for sec, where in citations().items() if sec not in have}
    assert not missing, f"sections cited but absent from docs/theory.md: {missing}"


def test_the_sections_the_code_relies_on_are_there():
    assert {"1", "2", "3", "3.0", "3.1", "3.5", "3.6", "3.7", "3.8", "5", "6"} <= sections()
    assert CITE.findall("theory.md §3.1–3.7 and §5") == [("3.1", "3.7"), ("5", "")]
