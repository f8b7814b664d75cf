"""The README's examples run as written, in a fresh process, and print what their comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_block(section: str) -> str:
    """The first ```python block of the README section headed ``section``."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def run(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_your_own_network(tmp_path):
    """Trains the CNN, analyses it, writes the report and prints one line per head layer: its name,
    the measured outliers and the count the theory expects at DNC (CE with ReLU: K = 10 below the
    last layer, K(K−1) = 90 at the last)."""
    out = run(code_block("Your own network"), tmp_path).strip().splitlines()
    rows = [line.split() for line in out]
    assert [r[0] for r in rows] == ["5", "7", "9"] and [r[2] for r in rows] == ["10", "10", "90"], out
    assert all(r[1].isdigit() for r in rows)
    report = tmp_path / "results" / "my-cnn"
    assert (report / "report.md").exists() and (report / "analysis.json").exists() and (report / "spectra.png").exists()


USAGE_CHECKS = """
(gap,), (evals16, shape), (count,), (spectrum,), (fidelity,), (groups,) = _printed
assert abs(gap) < 1e-8, gap                                   # "~1e-10"
assert tuple(shape) == (H.size, 16)
assert evals16.shape == (16,) and float(evals16.min()) > 1e3 * float(evals[:-16].abs().max())  # the K² = 16 outliers
assert count.count >= 1                                     # a count above the largest gap
assert bool((fidelity > 1 - 1e-10).all()), fidelity         # f_cc' = 1 for all K² pairs
assert groups.tolist() == [5, 5, 5, 5], groups              # samples equal up to rounding grouped
import sys; sys.stdout.write("checked")
"""


def test_usage_prints_what_its_comments_say(tmp_path):
    """The Usage block as written (its prints captured), then its comments as assertions."""
    code = "_printed = []\nprint = lambda *a: _printed.append(a)\n" + code_block("Usage") + USAGE_CHECKS
    assert run(code, tmp_path).strip() == "checked"


def test_the_layout_names_every_module_and_only_modules_that_exist():
    """Each ``fastdnc/<folder>/`` row of the README's Layout names files of that folder that exist,
    and every module of the package is named somewhere in the layout."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout\n", 1)[1].split("```", 2)[1]
    rows = re.split(r"\n(?=\S)", block.strip())
    named = set()
    for row in rows:
        head, rest = row.split(None, 1)
        if head.endswith(".py"):
            assert (ROOT / head).exists(), head
            named.add(head)
        elif head.startswith("fastdnc/"):
            named.update(f"{head}{w}.py" for w in re.findall(r"\w+", rest) if (ROOT / head / f"{w}.py").exists())
            for name in re.findall(r"\b(\w+)\.py\b", rest):
                assert (ROOT / head / f"{name}.py").exists(), f"{head}{name}.py"
    modules = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "fastdnc").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert modules <= named, sorted(modules - named)
