"""One process at a time per run folder or checkpoint: an advisory lock (``fcntl.flock``).

:func:`locked` takes an exclusive lock on a hidden lock file (``.<name>.lock`` beside a checkpoint,
``.fastdnc.lock`` in a run folder) without waiting: a second process on the same folder fails at
once with :class:`RunLockedError`, whose message names the process that holds it (its pid and
command line, written into the lock file). The kernel releases the lock when its process ends, even
by ``kill -9``, so a dead run never blocks the next one. The lock file is removed on release; a
process that opened it just before is detected (the path then names another file) and tries again.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLockedError(ValueError):
    """Another process holds the lock of a run folder or checkpoint."""


def lock_path(target: str | os.PathLike, folder: bool = False) -> Path:
    """The lock file of a run folder (``folder``) or of a file such as a checkpoint. Under torchrun
    (``WORLD_SIZE`` > 1) every rank of a job has its own lock of a folder (rank 0's is the plain one)."""
    target = Path(target)
    if not folder:
        return target.parent / f".{target.name}.lock"
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    return target / (f".fastdnc.rank{rank}.lock" if rank else ".fastdnc.lock")


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return f"process {text}" if text else "another process"


def _command_line() -> str:
    """This process's command line, short: ``fastdnc train …`` (also under ``python -m fastdnc``)."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = program.parent.name if program.name == "__main__.py" else program.name
    return " ".join([name, *sys.argv[1:]])[:200]


@contextmanager
def locked(target: str | os.PathLike, what: str, folder: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of ``target`` for the block, or raise :class:`RunLockedError` at once
    ("``what`` is in use by process PID (COMMAND)")."""
    path = lock_path(target, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{what} is in use by {_holder(path)}: wait for it to finish, or use another folder"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
        time.sleep(0.001)
    else:  # pragma: no cover - a lock file replaced 100 times in a row
        raise RunLockedError(f"{what}: its lock file {path} keeps changing")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} ({_command_line()})".encode())
        yield path
    finally:
        try:
            path.unlink()
        except FileNotFoundError:  # pragma: no cover
            pass
        os.close(fd)
