"""Reading files a user hands in: nothing in them runs, and memory stays bounded by the file.

* :func:`check_regular_file` refuses FIFOs, devices and folders before anything opens them (opening
  a FIFO for reading blocks until a writer appears).
* :func:`safe_torch_load` reads a ``torch.save`` file with ``weights_only=True`` (tensors, numbers,
  strings, lists, tuples and dicts; no code runs, whatever the file holds) **after** checking its
  zip container: every record must be stored uncompressed (torch never compresses, so a deflate
  bomb is refused before anything is inflated) and lie inside the file. torch itself checks each
  tensor record's size against the size its pickle declares, so the tensors of a file never take
  more memory than the file. The legacy (pre-1.6, non-zip) format, whose storages are allocated
  at the sizes the file declares, is refused.
* :func:`check_plain_size` walks unpickled plain data **without expanding shared references**: a
  pickle can reference one large string thousands of times at almost no cost in the file, and
  anything that copies it (JSON, comparisons) would then need thousands of copies. The walk counts
  every occurrence and stops at a budget proportional to the file, and at a nesting depth.
* :func:`read_json` caps a JSON file's size before reading it and turns deep nesting into a clear
  error instead of a ``RecursionError``.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

MAX_JSON_BYTES = 16 * 2**20  # a run's configuration or metrics: kilobytes
MAX_DEPTH = 100  # nesting of plain data (a history holds scalars and short lists)
MAX_ZIP_RECORDS = 100_000
PLAIN_BUDGET_PER_FILE_BYTE = 16  # units of expanded plain data per byte of the file
PLAIN_BUDGET_MIN = 64 * 2**20


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


def _check_zip_container(path: Path, what: str) -> None:
    """Every record of the zip stored uncompressed and inside the file; at most MAX_ZIP_RECORDS."""
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"cannot read {what} {path}: it is not a zip-format torch file (torch.save since PyTorch 1.6 "
            "writes one; the legacy format declares its own storage sizes and is not read)"
        )
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"cannot read {what} {path}: a damaged zip container ({e})") from None
    if len(infos) > MAX_ZIP_RECORDS:
        raise ValueError(f"cannot read {what} {path}: {len(infos)} records (at most {MAX_ZIP_RECORDS})")
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(
                f"cannot read {what} {path}: record {info.filename!r} is compressed (torch.save never compresses; "
                "a compressed record could inflate far beyond the file's size)"
            )
        if info.file_size != info.compress_size or info.header_offset + info.file_size > size:
            raise ValueError(
                f"cannot read {what} {path}: record {info.filename!r} declares {info.file_size} bytes that the "
                f"file of {size} bytes does not hold"
            )


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
    :func:`check_regular_file` and the zip checks of the module docstring; any failure is a
    ``ValueError`` naming the file. The loaded plain data is checked by :func:`check_plain_size`."""
    path = check_regular_file(path, what)
    _check_zip_container(path, what)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure of a foreign file becomes one clear error
        raise ValueError(
            f"cannot read {what} {path}: {_load_problem(e)} (only fastdnc checkpoints of tensors, "
            "numbers, strings, lists and dicts are loaded; nothing in a file is ever executed)"
        ) from e
    check_plain_size(obj, f"{what} {path}", path.stat().st_size)
    return obj


def check_plain_size(obj: Any, what: str, file_bytes: int) -> None:
    """Refuse plain data whose expanded size (every occurrence of a shared object counted, strings by
    their length) exceeds ``max(PLAIN_BUDGET_MIN, PLAIN_BUDGET_PER_FILE_BYTE × file_bytes)`` or whose
    nesting exceeds :data:`MAX_DEPTH`; an iterative walk that stops at the budget (tensors count
    one: their memory is already bounded by the file)."""
    budget = max(PLAIN_BUDGET_MIN, PLAIN_BUDGET_PER_FILE_BYTE * file_bytes)
    used, stack = 0, [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        used += len(item) if isinstance(item, (str, bytes)) else 1
        if used > budget:
            raise ValueError(
                f"{what} expands to more than {budget:,} units of plain data (a file of {file_bytes:,} bytes "
                "whose entries reference the same large objects many times?); refusing to read it"
            )
        if depth > MAX_DEPTH:
            raise ValueError(f"{what} nests its data more than {MAX_DEPTH} levels deep; refusing to read it")
        if isinstance(item, dict):
            stack.extend((x, depth + 1) for kv in item.items() for x in kv)
        elif isinstance(item, (list, tuple)):
            stack.extend((x, depth + 1) for x in item)


def read_json(path: str | os.PathLike, what: str, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """The JSON object in ``path``: a regular file of at most ``max_bytes`` (checked before reading),
    valid UTF-8 JSON, not nested deeper than Python can parse, and an object; else one ValueError."""
    path = check_regular_file(path, what)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{what} {path} has {size:,} bytes (at most {max_bytes:,}): not a file fastdnc wrote")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(max_bytes + 1).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{what} {path} nests its JSON too deeply to read") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    check_plain_size(data, f"{what} {path}", size)
    return data


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A model's ``state_dict`` saved with ``torch.save``: read by :func:`safe_torch_load` (nothing runs)
    and checked to be a mapping of names to tensors (also under a ``"state_dict"`` or ``"model"`` key,
    as training scripts save it); a ValueError otherwise."""
    obj = safe_torch_load(path, "cpu", what="weights file")
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), obj)
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise ValueError(f"weights file {path} is not a state_dict (a mapping of parameter names to tensors)")
    return obj


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(state)`` with one clear error naming the missing, unexpected and
    mis-shaped entries."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else ""]
        parts.append(f"shapes differ: {shapes[:5]}" if shapes else "")
        raise ValueError(f"{what} does not fit the model: {'; '.join(p for p in parts if p)}")
    model.load_state_dict(state)
