"""A gloo process group in which this process is rank 0: sharded products timed side by side with
single-process ones, in one pytest-benchmark session.

The other ranks are spawned processes. Each builds the same product as this process (so the
collectives of its construction, e.g. the global sample count, run in the same order) and then
waits on a pipe: every time this process computes the product it first sends one message to each
rank (a few microseconds beside the product's milliseconds), and the ranks' all_reduce pairs them.
A waiting rank sleeps in ``recv``, so it takes no core from a single-process baseline timed in
between. The group is started by the first product, not before: nothing else this process runs
meanwhile sees an initialised process group (training and the collapse metrics reduce over one).
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import tempfile
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import torch.distributed as dist

from .. import _comm
from .._threads import fixed_threads

#: a picklable call (a module-level function, or a functools.partial of one) that builds a rank's
#: product and returns it as a call without arguments
Builder = Callable[[], Callable[[], object]]


def _join(init: str, rank: int, world: int, timeout_s: float) -> None:
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=timeout)


def _serve(rank: int, world: int, init: str, build: Builder, threads: int, pipe: Connection, timeout_s: float) -> None:
    """Rank ``rank``: build the product, then compute it once per ``True`` received; leave the group
    on ``False`` (or when rank 0's end of the pipe closes)."""
    _join(init, rank, world, timeout_s)
    ok = False
    try:
        with fixed_threads(threads):
            step = build()
            while pipe.recv():
                step()
        ok = True
    except EOFError:
        pass
    finally:
        _comm.shutdown(ok)


class World:
    """``world`` processes with ``threads`` intra-op threads each computing the product ``build``
    returns; calling the world computes it once on every rank and returns rank 0's result."""

    def __init__(self, build: Builder, world: int = 2, threads: int = 1, timeout_s: float = 120.0) -> None:
        if world < 2:
            raise ValueError(f"a world needs at least 2 processes, got {world}")
        self.build, self.world, self.threads, self.timeout_s = build, world, threads, timeout_s
        self._pipes: list[Connection] = []
        self._procs: list = []
        self._step: Callable[[], object] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._joined = False

    def start(self) -> None:
        """Spawn the other ranks and join the group with them (rank 0 is this process)."""
        if _comm.initialized():
            raise RuntimeError("this process is already in a process group: a World needs its own")
        ctx = mp.get_context("spawn")
        self._tmp = tempfile.TemporaryDirectory(prefix="fastdnc-world-")
        init = f"file://{Path(self._tmp.name) / 'store'}"
        try:
            for rank in range(1, self.world):
                ours, theirs = ctx.Pipe()
                args = (rank, self.world, init, self.build, self.threads, theirs, self.timeout_s)
                proc = ctx.Process(target=_serve, args=args, daemon=True)
                proc.start()
                theirs.close()
                self._pipes.append(ours)
                self._procs.append(proc)
            _join(init, 0, self.world, self.timeout_s)
            self._joined = True
            with fixed_threads(self.threads):
                self._step = self.build()
        except BaseException:
            self.close(False)
            raise

    def __call__(self) -> object:
        if self._step is None:
            self.start()
        assert self._step is not None
        for pipe in self._pipes:
            pipe.send(True)
        with fixed_threads(self.threads):
            return self._step()

    def close(self, success: bool = True) -> None:
        """Stop the other ranks and leave the group (after a barrier when every rank is well)."""
        for pipe in self._pipes:
            try:
                pipe.send(False)
            except OSError:  # that rank is gone already
                success = False
        if self._joined:
            _comm.shutdown(success)
            self._joined = False
        for proc in self._procs:
            proc.join(self.timeout_s if success else 5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._procs, self._step = [], [], None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
