"""CIFAR-10 from its python pickle batches in ``ROOT/cifar-10-batches-py/`` (torchvision's layout).

Each batch is a pickled dict with ``b"data"`` (10000 × 3072 uint8: the red, green and blue
32 × 32 planes of each image) and ``b"labels"`` (a list of 10000 ints in 0..9).

A pickle is a program, so the reader runs only what a genuine batch needs and checks sizes before
anything is allocated: the file is read whole (at most :data:`MAX_FILE_BYTES`) and unpickled from
memory by :func:`~fastdnc.data.restricted_pickle.load_arrays` with plain integer arrays of at most
10000 × 3072 entries; anything else (``bytearray``, ``eval``, ``os.system``, …) is refused with
:class:`DataError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DataError, regular_file
from .restricted_pickle import UNPICKLING_ERRORS, ArrayRules, load_arrays
from .sampling import Dataset, check_labels

_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
ROWS, COLUMNS = 10_000, 3072  # one genuine batch
MAX_FILE_BYTES = 64 * 2**20  # a genuine batch is about 31 MB
_RULES = ArrayRules(
    "a CIFAR-10 batch",
    frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "<i8", "<i4", "|u1"}),
    ROWS * COLUMNS,
)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    regular_file(path, "CIFAR-10 batch")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(
            f"{path} is {size / 2**20:.0f} MiB, more than any CIFAR-10 batch (about 30 MiB): not a CIFAR-10 pickle"
        )
    try:
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
        batch, checked = load_arrays(raw, _RULES)
    except (OSError, *UNPICKLING_ERRORS) as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e} (corrupt or not a CIFAR-10 pickle)") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, checked) or data.dtype != np.uint8:
        raise DataError(
            f"{path}: b'data' must be a uint8 NumPy array, got {type(data).__name__}"
            f"{' of ' + str(data.dtype) if isinstance(data, np.ndarray) else ''}"
        )
    data = data.view(np.ndarray)
    if not isinstance(labels, (list, np.ndarray)):
        raise DataError(f"{path}: b'labels' must be a list of ints, got {type(labels).__name__}")
    labels = check_labels(labels, 10, str(path))
    if data.ndim != 2 or data.shape[1] != COLUMNS or data.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: data {data.shape} and labels {labels.shape} do not match (expected N × {COLUMNS} and N)"
        )
    return data, labels


def load_cifar10(root: Path, split: str = "train") -> Dataset:
    """CIFAR-10's ``split`` from ``root/cifar-10-batches-py/`` as (N, 3, 32, 32) images in [0, 1]."""
    folder = Path(root) / "cifar-10-batches-py"
    missing = [n for n in _FILES[split] if not (folder / n).exists()]
    if missing:
        raise DataError(
            f"CIFAR-10 files missing in {folder}: {', '.join(missing)}. Expected the torchvision "
            f"layout ROOT/cifar-10-batches-py/ with {', '.join(_FILES[split])}; nothing is downloaded"
        )
    parts = [_read_batch(folder / n) for n in _FILES[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return Dataset("cifar10", x, torch.from_numpy(labels), 10)
