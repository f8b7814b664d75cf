"""Thread counts by problem size and load: one thread for small GEMMs, never more threads than the
cores other processes leave free, the caller's setting restored."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc import _threads
from fastdnc._threads import SERIAL_GEMM_FLOPS, intra_op_threads, threads_for


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    """The size rules are tested as on an idle machine (the load rule has its own tests below)."""
    monkeypatch.setattr(_threads, "runnable_elsewhere", lambda: 0)
    monkeypatch.setattr(_threads, "_LOAD", [-1.0, 0.0])
    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("others, expected", [(0, 2), (1, 1), (5, 1), (None, 2)])
def test_large_work_never_takes_more_threads_than_other_processes_leave_free(
    two_threads, monkeypatch, others, expected
):
    monkeypatch.setattr(_threads, "runnable_elsewhere", lambda: others)
    assert threads_for(2 * 512**3) == expected
    assert threads_for(2 * 64 * 64 * 40) == 1
    assert threads_for(2 * 512**3, threads=2) == 2  # an explicit count still wins


def test_the_load_is_sampled_at_most_every_few_tenths_of_a_second(monkeypatch):
    calls = []
    monkeypatch.setattr(_threads, "runnable_elsewhere", lambda: calls.append(1) or 0)
    for _ in range(100):
        _threads.free_cores()
    assert len(calls) == 1


def test_a_busy_process_is_seen_as_runnable_elsewhere(monkeypatch):
    """The real reading of /proc: a process spinning on a core counts, this process's threads do not."""
    import subprocess
    import sys
    import time

    monkeypatch.undo()  # the real functions
    assert _threads.runnable_elsewhere() is not None  # Linux reports it (/proc/stat, /proc/self/task)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert min(_threads.runnable_elsewhere() for _ in range(5)) >= 1
    finally:
        busy.kill()
        busy.wait()


def test_threads_for_sizes(two_threads):
    assert threads_for(2 * 64 * 64 * 40) == 1
    assert threads_for(2 * 512**3) == 2
    assert threads_for(SERIAL_GEMM_FLOPS / 2, threads=2) == 2  # an explicit count wins
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be an int >= 1"):
            threads_for(1.0, threads=bad)


def test_the_callers_setting_is_restored_even_on_errors(two_threads):
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), intra_op_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(
    "model, threads, inside",
    [
        (lambda: fd.DeepUFM(4, 5, 12, 4), None, 1),  # GEMMs of 12 × 12 × 20: one thread
        (lambda: fd.DeepUFM(4, 100, 256, 2), None, 2),  # 256 × 256 × 400: the caller's two
        (lambda: fd.DeepUFM(4, 5, 12, 4), 2, 2),  # asked for
    ],
)
def test_training_picks_threads_and_restores_them(two_threads, model, threads, inside):
    seen = []
    fd.train(
        model(),
        3,
        0.01,
        callbacks=[lambda m, s: seen.append(torch.get_num_threads()) or {}],
        log_at=1,
        threads=threads,
        progress=False,
    )
    assert set(seen) == {inside} and torch.get_num_threads() == 2


def test_operator_products_and_lanczos_choose_threads_by_size_and_restore_the_callers():
    """A small operator's product and a small Lanczos run on one thread; a large product keeps the
    caller's setting; the caller's count is back afterwards either way."""
    import fastdnc as fd
    from fastdnc.curvature.operator import CurvatureOperator

    seen = []

    class Probe(CurvatureOperator):
        def __init__(self, size, flops):
            super().__init__(size, torch.float64, "cpu")
            self.flops = flops

        def gemm_flops(self, k=1):
            return self.flops

        def _matmat(self, v):
            seen.append(torch.get_num_threads())
            return v * torch.arange(1, self.size + 1, dtype=v.dtype)[:, None]

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Probe(50, 1e3) @ torch.ones(50, dtype=torch.float64)
        Probe(50, 1e12) @ torch.ones(50, dtype=torch.float64)
        assert seen == [1, 2] and torch.get_num_threads() == 2
        seen.clear()
        res = fd.lanczos(Probe(50, 1e3), k=3)
        torch.testing.assert_close(res.eigenvalues, torch.tensor([50.0, 49.0, 48.0], dtype=torch.float64))
        assert set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
