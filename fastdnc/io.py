"""Atomic writes: a file is either its old version or its complete new version, never half.

Everything the package writes for a user (checkpoints, histories, reports, figures) goes through
these helpers: the data is written to a temporary file in the same folder, flushed and fsynced,
then moved over the target with ``os.replace`` (atomic on POSIX and Windows), and the folder is
fsynced so that the rename survives a crash.

Reading is the other half of the contract: :func:`safe_torch_load` never executes data (torch's
``weights_only`` unpickler: tensors, numbers, strings, lists, tuples and dicts only), and
:func:`check_regular_file` refuses FIFOs, devices and folders before anything opens them (opening a
FIFO for reading blocks until a writer appears). :func:`remove_stale_temporaries` deletes the
temporary files that a killed write leaves behind.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch


def check_regular_file(path: str | os.PathLike, what: str = "file", must_exist: bool = True) -> Path:
    """Return ``path`` if it is a regular file; raise ``FileNotFoundError`` (when ``must_exist``) or
    ``ValueError`` naming what it is instead (a FIFO, a folder, a device, …)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if must_exist:
            raise FileNotFoundError(f"{what} {path} does not exist") from None
        return path
    except OSError as e:
        raise ValueError(f"cannot use {what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a folder"
            if stat.S_ISDIR(mode)
            else "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file"
        )
        raise ValueError(f"{what} {path} is {kind}, not a regular file; refusing to use it")
    return path


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp`` beside ``path``) that an interrupted atomic
    write of ``path`` left behind; returns what was removed. Call it when a new run takes over
    ``path`` (one writer per file is the package's rule)."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    prefix = _temporary_prefix(path)
    for entry in path.parent.iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(".tmp") and entry.is_file():
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
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
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


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN is written as ``NaN``)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def plain(obj: Any) -> Any:
    """``obj`` as plain Python data (dicts, lists, str, int, float, bool, None): tensors and NumPy
    values become lists and numbers. What a checkpoint stores besides tensors goes through this,
    so that :func:`safe_torch_load` can read it back."""
    return json.loads(json.dumps(obj, default=_json_default))


def _load_problem(e: Exception) -> str:
    """The informative part of torch's loading errors (not its advice to load unsafely)."""
    text = str(e)
    if text.startswith("Weights only load failed"):
        detail = (
            text.split("WeightsUnpickler error:", 1)[-1]
            if "WeightsUnpickler error:" in text
            else "\n".join(text.splitlines()[1:])
        )
        detail = " ".join(detail.split("Check the documentation")[0].split())
        return f"it holds something other than data ({detail or 'refused by the safe unpickler'})"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def safe_torch_load(path: str | os.PathLike, map_location: Any = None, what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only=True`` (no code runs, whatever the file holds), after
    :func:`check_regular_file`; any failure is a ``ValueError`` naming the file."""
    path = check_regular_file(path, what)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure of a foreign file becomes one clear error
        raise ValueError(
            f"cannot read {what} {path}: {_load_problem(e)} (only fastdnc checkpoints of tensors, "
            "numbers, strings, lists and dicts are loaded; nothing in a file is ever executed)"
        ) from e
