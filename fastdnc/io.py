"""Writing files: a file is either its old version or its complete new version, never half.

Everything the package writes for a user (checkpoints, histories, reports, figures) goes through
these helpers: the data is written to a temporary file in the same folder, flushed and fsynced,
given the permissions the user's umask gives a new file (``0o666 & ~umask``, as ``open`` would),
then moved over the target with ``os.replace`` (atomic on POSIX and Windows), and the folder is
fsynced so that the rename survives a crash.

A temporary is named ``.<target>.<pid>-<random>.tmp``: :func:`remove_stale_temporaries` deletes
only those whose writing process is gone (and the pid-less ones of older versions), never the
in-flight temporary of a process that is still running. :func:`recording_created` lists the files a
block of code created (not those it replaced), so that a failed command can remove exactly what it
made. Reading untrusted files is :mod:`fastdnc.safe_read`.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .safe_read import check_regular_file

_RECORDERS: list[list[Path]] = []


@contextmanager
def recording_created() -> Iterator[list[Path]]:
    """Within the block, the list of the files that :func:`atomic_write_bytes` created (targets that
    did not exist before), in order."""
    created: list[Path] = []
    _RECORDERS.append(created)
    try:
        yield created
    finally:
        _RECORDERS.remove(created)


def file_mode() -> int:
    """The permissions a new file gets under the current umask (``0o666 & ~umask``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # pragma: no cover - not Linux: read it by setting it back at once
    os.umask(mask)  # pragma: no cover
    return 0o666 & ~mask  # pragma: no cover


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


_PID_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has no write in flight when it cleans up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _stale(entry: Path, target: str | None) -> bool:
    """Whether ``entry`` is a temporary of ``target`` (of any file when ``None``) whose writer is gone."""
    m = _PID_TEMPORARY.match(entry.name)
    if m:
        return (target is None or m["target"] == target) and not _writer_alive(int(m["pid"]))
    # a temporary of an older version (no pid): only for a named target
    return target is not None and entry.name.startswith(f".{target}.") and entry.name.endswith(".tmp")


def remove_stale_temporaries(path: str | os.PathLike, any_target: bool = False) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes of ``path`` left behind (of any
    file in the folder ``path`` with ``any_target``), but never one whose writing process is still
    running; returns what was removed."""
    path = Path(path)
    folder, target = (path, None) if any_target else (path.parent, path.name)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.name.endswith(".tmp") and _stale(entry, target) and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:  # pragma: no cover - raced with another cleaner
                pass
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` by ``data`` (creating parent folders). An existing ``path``
    that is not a regular file (a FIFO, a folder) is refused, never replaced."""
    path = check_regular_file(path, "output file", must_exist=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    fd, tmp = tempfile.mkstemp(prefix=f"{_temporary_prefix(path)}{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if not existed:
        for created in _RECORDERS:
            created.append(path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return path
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def strict_json(obj: Any) -> tuple[Any, dict[str, str]]:
    """``obj`` as plain data that strict JSON can hold: every non-finite float becomes ``null`` and
    is listed in the second result by its path (``"a.b[2]"``) with what it was (``"Infinity"``,
    ``"-Infinity"``, ``"NaN"``)."""
    where: dict[str, str] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            where[path or "."] = "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
            return None
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]
        return x

    return walk(plain(obj), ""), where


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented strict JSON (RFC 8259: no ``NaN``/``Infinity``). A
    non-finite number is written as ``null``; a top-level object then gains ``"non_finite"``, the
    path of each such value with what it was (:func:`strict_json`)."""
    clean, where = strict_json(obj)
    if where:
        if not isinstance(clean, dict):
            raise ValueError(f"non-finite values {where} in a JSON list: there is no field to say so")
        clean = {**clean, "non_finite": where}
    return atomic_write_text(path, json.dumps(clean, indent=2, allow_nan=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def plain(obj: Any) -> Any:
    """``obj`` as plain Python data (dicts, lists, str, int, float, bool, None): tensors and NumPy
    values become lists and numbers. What a checkpoint stores besides tensors goes through this,
    so that :func:`fastdnc.safe_read.safe_torch_load` can read it back."""
    return json.loads(json.dumps(obj, default=_json_default))
