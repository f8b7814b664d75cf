"""MNIST in its IDX files (plain or gzip), from ``ROOT/MNIST/raw/`` (torchvision's layout).

IDX: two zero bytes, a type code (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, one big-endian uint32 per dimension, then
the data, big-endian. Images are ``idx3`` (N × 28 × 28), labels ``idx1`` (N).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .sampling import Dataset

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one IDX file (``.gz`` or plain); :class:`DataError` if it is not valid."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DataError(f"{path} is not an IDX file: bad magic number {raw[:4].hex() or '(empty)'} "
                        "(expected 0000 08 0n for unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header needs {header} bytes, the file has {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_TYPES[raw[2]])
    need = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != need:
        raise DataError(f"{path} is {'truncated' if len(raw) < need else 'too long'}: shape {shape} of {dtype} "
                        f"needs {need} bytes, the file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_mnist(root: Path, split: str = "train") -> Dataset:
    """MNIST's ``split`` from ``root/MNIST/raw/`` as (N, 1, 28, 28) images in [0, 1]."""
    folder = Path(root) / "MNIST" / "raw"
    stems = _FILES[split]
    paths = [_find(folder, s) for s in stems]
    if None in paths:
        missing = [s for s, p in zip(stems, paths) if p is None]
        raise DataError(f"MNIST files missing in {folder}: {', '.join(missing)} (plain or .gz). Expected the "
                        f"torchvision layout ROOT/MNIST/raw/ with {', '.join(stems)}; nothing is downloaded")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"MNIST files in {folder} do not match: images {images.shape}, labels {labels.shape} "
                        "(expected N × 28 × 28 and N)")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{paths[1]} has labels outside 0..9")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return Dataset("mnist", x, torch.from_numpy(labels.astype(np.int64)), 10)
