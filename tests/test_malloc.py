"""Large allocations are reused, not faulted in again: after ``reuse_large_allocations`` a loop that
allocates and frees a 64 MiB tensor touches its pages once instead of every time (minor page faults
counted by the kernel, in fresh child processes with and without the call)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import resource, sys, torch
from fastdnc._malloc import reuse_large_allocations
took = reuse_large_allocations() if sys.argv[1] == "reuse" else None
torch.ones(8 * 2**20, dtype=torch.float64).sum()  # the first one is faulted in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(8 * 2**20, dtype=torch.float64).sum()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    took, count = out.stdout.split()
    return took, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_are_reused_instead_of_faulted_in_every_time():
    took, reused = faults("reuse")
    _, fresh = faults("plain")
    assert took == "True"
    assert fresh > 20 * 16384 // 2  # each 64 MiB block faulted in again (16,384 pages of 4 KiB)
    assert reused < fresh / 2, (reused, fresh)  # here about 98,000 against 328,000
