"""MNIST in its IDX files (plain or gzip), from ``ROOT/MNIST/raw/`` (torchvision's layout).

IDX: two zero bytes, a type code (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, one big-endian uint32 per dimension, then
the data, big-endian. Images are ``idx3`` (N × 28 × 28), labels ``idx1`` (N).

The reader never trusts the file: it reads and checks the header first (magic, type, number of
dimensions, every dimension against what the caller expects, and the product against
:data:`MAX_ENTRIES` before any arithmetic can overflow), then reads exactly the body the header
declares, through a streaming gzip decoder when the file is compressed. A gzip bomb therefore stops
at the declared size plus one byte, and memory never exceeds the array the header announced.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, regular_file
from .sampling import Dataset, check_labels

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MAX_ENTRIES = 2**31  # no IDX array of the package's data sets comes near it (MNIST: 47 million bytes)
MNIST_MAX_SAMPLES = {"train": 60_000, "test": 10_000}
_CHUNK = 1 << 20


def _read_exactly(f, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path} is truncated: its {what} needs {n} bytes, the file has {len(data)}")
    return data


def read_idx(
    path: str | Path, expect: Sequence[int | None] | None = None, max_entries: int = MAX_ENTRIES
) -> np.ndarray:
    """The array stored in one IDX file (``.gz`` or plain); :class:`DataError` if it is not valid.

    ``expect``: the shape the caller needs, ``None`` for a free dimension (e.g. ``(None, 28, 28)``),
    checked from the header before the body is read; ``max_entries`` bounds the product of the
    dimensions (hence the memory) likewise.
    """
    path = regular_file(Path(path), "IDX file")
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            return _read_idx_stream(f, path, expect, max_entries, None if compressed else path.stat().st_size)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {e}") from e


def _read_idx_stream(f, path: Path, expect, max_entries: int, file_size: int | None) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _TYPES:
        raise DataError(
            f"{path} is not an IDX file: bad magic number {magic.hex() or '(empty)'} "
            "(expected 0000 08 0n for unsigned bytes)"
        )
    ndim = magic[3]
    if expect is not None and ndim != len(expect):
        raise DataError(f"{path} holds a {ndim}-dimensional array, expected {len(expect)} dimensions")
    if ndim == 0:
        raise DataError(f"{path} declares an array with no dimensions")
    head = _read_exactly(f, 4 * ndim, path, "header")
    shape = tuple(int.from_bytes(head[4 * i : 4 * i + 4], "big") for i in range(ndim))
    if expect is not None:
        for i, (got, want) in enumerate(zip(shape, expect)):
            if want is not None and got != want:
                raise DataError(f"{path} declares shape {shape}; dimension {i} must be {want}")
    entries = 1
    for s in shape:  # Python ints: no overflow, and the bound is checked before any allocation
        entries *= s
        if entries > max_entries:
            raise DataError(
                f"{path} declares shape {shape}, more than the {max_entries} entries an IDX file of "
                "this data set can hold"
            )
    dtype = np.dtype(_TYPES[magic[2]])
    need = entries * dtype.itemsize
    if file_size is not None and file_size != 4 + 4 * ndim + need:
        state = "truncated" if file_size < 4 + 4 * ndim + need else "too long"
        raise DataError(
            f"{path} is {state}: shape {shape} of {dtype} needs {4 + 4 * ndim + need} bytes, the file has {file_size}"
        )
    out = np.empty(need, dtype=np.uint8)
    got = 0
    while got < need:
        chunk = f.read(min(_CHUNK, need - got))
        if not chunk:
            raise DataError(
                f"{path} is truncated: shape {shape} of {dtype} needs {need} bytes of data, the file has {got}"
            )
        out[got : got + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        got += len(chunk)
    if f.read(1):
        raise DataError(
            f"{path} is too long: shape {shape} of {dtype} needs {need} bytes of data, the file has "
            "more (a corrupt file or a decompression bomb)"
        )
    return out.view(dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def load_mnist(root: Path, split: str = "train") -> Dataset:
    """MNIST's ``split`` from ``root/MNIST/raw/`` as (N, 1, 28, 28) images in [0, 1]."""
    folder = Path(root) / "MNIST" / "raw"
    stems = _FILES[split]
    paths = [_find(folder, s) for s in stems]
    if paths[0] is None or paths[1] is None:
        missing = [s for s, p in zip(stems, paths) if p is None]
        raise DataError(
            f"MNIST files missing in {folder}: {', '.join(missing)} (plain or .gz). Expected the "
            f"torchvision layout ROOT/MNIST/raw/ with {', '.join(stems)}, or ROOT/mnist.pkl.gz (`make data` "
            "fetches it); nothing is downloaded (omit the folder, --data-dir, for the offline 5,000-digit sample)"
        )
    most = MNIST_MAX_SAMPLES[split]
    images = read_idx(paths[0], expect=(None, 28, 28), max_entries=most * 28 * 28)
    labels = read_idx(paths[1], expect=(None,), max_entries=most)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"MNIST files in {folder} do not match: images {images.shape}, labels {labels.shape} "
            "(expected N × 28 × 28 and N)"
        )
    y = check_labels(labels, 10, str(paths[1]))
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return Dataset("mnist", x, torch.from_numpy(y), 10)
