"""Hostile inputs run in a child process: no code may run, memory must stay bounded, and the error
must name the file and the problem.

``isolated(code)`` runs ``code`` (which defines ``run()``, the operation under test) in a fresh
Python, after fastdnc and its loaders are imported, and returns what happened: the exception type
and message, the growth of the peak resident memory during ``run()`` (the kernel's high-water mark
``VmHWM``, reset just before: ``ru_maxrss`` would carry the parent's peak across ``exec``), and the
wall time. A ``timeout`` guards against blocking (a FIFO opened for reading).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PEAK_KB = """
def status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
"""

RUNNER = textwrap.dedent(
    """
    import json, sys, time, traceback
    import numpy, torch, fastdnc, fastdnc.data, fastdnc.training  # imported before the baseline
    {peak}
    {code}
    reset_peak()
    before = status_kb("VmRSS")
    t0 = time.perf_counter()
    error = kind = None
    try:
        run()
    except BaseException as e:  # what the caller would see
        kind, error = type(e).__name__, str(e)
    grown = status_kb("VmHWM") - before
    print(json.dumps({{"kind": kind, "error": error, "rss_growth_mb": grown / 1024,
                      "seconds": time.perf_counter() - t0}}))
    """
)

RSS_LIMIT_MB = 200


@pytest.fixture
def isolated():
    def run(code: str, timeout: float = 120) -> dict:
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER.format(peak=PEAK_KB, code=textwrap.dedent(code))],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture
def sentinel(tmp_path):
    """A path that a payload would create if it ran; the tests assert it never exists."""
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran"
