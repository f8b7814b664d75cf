"""CIFAR-10 from its python pickle batches in ``ROOT/cifar-10-batches-py/`` (torchvision's layout).

Each batch is a pickled dict with ``b"data"`` (10000 × 3072 uint8: the red, green and blue
32 × 32 planes of each image) and ``b"labels"``. The unpickler only accepts the numpy types that
these files contain, so a foreign pickle cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .sampling import Dataset

_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"), ("builtins", "bytearray")}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _Unpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e} (corrupt or not a CIFAR-10 pickle)") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels'")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DataError(f"{path}: data {data.shape} and labels {labels.shape} do not match (expected N × 3072 and N)")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path} has labels outside 0..9")
    return data, labels


def load_cifar10(root: Path, split: str = "train") -> Dataset:
    """CIFAR-10's ``split`` from ``root/cifar-10-batches-py/`` as (N, 3, 32, 32) images in [0, 1]."""
    folder = Path(root) / "cifar-10-batches-py"
    missing = [n for n in _FILES[split] if not (folder / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 files missing in {folder}: {', '.join(missing)}. Expected the torchvision "
                        f"layout ROOT/cifar-10-batches-py/ with {', '.join(_FILES[split])}; nothing is downloaded")
    parts = [_read_batch(folder / n) for n in _FILES[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return Dataset("cifar10", x, torch.from_numpy(labels), 10)
