"""curvlinops' own operator tests (``test/test_hessian.py``, ``test/test_ggn.py`` of the installed
version's source distribution, from the package index) with one change: the import of the class
under test comes from :mod:`fastdnc.compat.curvlinops`. Every case must pass: dict batches, block
sizes, adjoints, vectors, matrices, lists and SciPy, checked by their helpers."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
import tarfile
import urllib.request

import pytest

SWAPS = {
    "test_hessian.py": "from curvlinops import HessianLinearOperator",
    "test_ggn.py": "from curvlinops import GGNLinearOperator",
}


def _sdist(tmp_path, version: str):
    """The source distribution from PyPI (its simple JSON API, PEP 691; the archive checked against
    the index's sha256)."""
    index = urllib.request.Request(
        "https://pypi.org/simple/curvlinops-for-pytorch/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(index, timeout=60) as r:
            files = json.load(r)["files"]
        (sdist,) = [f for f in files if f["filename"] == f"curvlinops_for_pytorch-{version}.tar.gz"]
        with urllib.request.urlopen(sdist["url"], timeout=120) as r:
            blob = r.read()
    except OSError as e:
        pytest.skip(f"the package index is not reachable for curvlinops {version}'s source distribution: {e}")
    assert hashlib.sha256(blob).hexdigest() == sdist["hashes"]["sha256"]
    path = tmp_path / sdist["filename"]
    path.write_bytes(blob)
    return path


def test_curvlinops_own_tests_pass_with_the_import_swapped(tmp_path):
    try:
        version = importlib.metadata.version("curvlinops-for-pytorch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("curvlinops (peers extra) not installed")
    with tarfile.open(_sdist(tmp_path, version)) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and "/test/" in m.name and ".." not in m.name]
        tar.extractall(tmp_path, members=members, filter="data")
    root = next(tmp_path.glob("curvlinops*/"))
    for name, line in SWAPS.items():
        path = root / "test" / name
        text = path.read_text()
        assert text.count(line + "\n") == 1, f"{name} no longer imports the class as expected"
        path.write_text(text.replace(line, line.replace("from curvlinops", "from fastdnc.compat.curvlinops")))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            *(f"test/{n}" for n in SWAPS),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0 and " passed" in tail and "failed" not in tail, run.stdout[-4000:] + run.stderr[-2000:]
