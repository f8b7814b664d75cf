"""CIFAR-10 from its python pickle batches in ``ROOT/cifar-10-batches-py/`` (torchvision's layout).

Each batch is a pickled dict with ``b"data"`` (10000 × 3072 uint8: the red, green and blue
32 × 32 planes of each image) and ``b"labels"`` (a list of 10000 ints in 0..9).

A pickle is a program, so the reader runs only what a genuine batch needs and checks sizes before
anything is allocated:

* the file is read whole (at most :data:`MAX_FILE_BYTES`) and unpickled from memory, so no length
  declared inside it makes the reader allocate more than the file holds;
* the only globals are NumPy's array reconstruction (``_reconstruct``, ``ndarray``) and ``dtype``,
  through wrappers: the array must be rebuilt from NumPy's empty placeholder, its dtype must be a
  plain integer type, and its declared shape (at most 10000 × 3072) must match the bytes that the
  file really carries before NumPy sees it. Nothing else (``bytearray``, ``eval``, ``os.system``,
  …) can be called: such a file is refused with :class:`DataError`.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, regular_file
from .sampling import Dataset, check_labels

_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
ROWS, COLUMNS = 10_000, 3072  # one genuine batch
MAX_FILE_BYTES = 64 * 2**20  # a genuine batch is about 31 MB
_INTEGER_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "<i8", "<i4", "|u1"}

try:  # NumPy ≥ 2 moved the module; pickles name either
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[no-redef]


class _CheckedArray(np.ndarray):
    """An ndarray whose unpickling state is checked before NumPy allocates anything."""

    def __setstate__(self, state):  # noqa: D105
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("an array state that NumPy never writes")
        _, shape, dtype, _, raw = state
        if not (isinstance(shape, tuple) and len(shape) <= 2 and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise pickle.UnpicklingError(f"an array of shape {shape!r}: CIFAR-10 needs at most two dimensions")
        if not (isinstance(dtype, np.dtype) and dtype.kind in "ui" and dtype.fields is None and dtype.subdtype is None):
            raise pickle.UnpicklingError(f"an array of dtype {dtype!r}: CIFAR-10 holds plain integers")
        count = math.prod(shape)
        if count > ROWS * COLUMNS:
            raise pickle.UnpicklingError(
                f"an array of declared shape {shape} ({count} entries): a CIFAR-10 batch "
                f"holds at most {ROWS} × {COLUMNS}"
            )
        if not isinstance(raw, bytes) or len(raw) != count * dtype.itemsize:
            size = len(raw) if isinstance(raw, (bytes, bytearray, str)) else type(raw).__name__
            raise pickle.UnpicklingError(
                f"an array of shape {shape} that carries {size} bytes instead of {count * dtype.itemsize}"
            )
        super().__setstate__(state)


def _reconstruct(subtype, shape, dtype):
    if subtype is not _CheckedArray or tuple(shape) != (0,) or dtype not in (b"b", "b"):
        raise pickle.UnpicklingError("an array reconstruction that NumPy never writes")
    return _np_reconstruct(_CheckedArray, (0,), b"b")


def _dtype(name, align=False, copy=True):
    key = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    if key not in _INTEGER_DTYPES:
        raise pickle.UnpicklingError(f"the dtype {name!r}: CIFAR-10 holds plain integers")
    return np.dtype(key)


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _CheckedArray,
    ("numpy", "dtype"): _dtype,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch needs only NumPy arrays"
            ) from None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    regular_file(path, "CIFAR-10 batch")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(
            f"{path} is {size / 2**20:.0f} MiB, more than any CIFAR-10 batch (about 30 MiB): not a CIFAR-10 pickle"
        )
    try:
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
        batch = _Unpickler(io.BytesIO(raw), encoding="bytes").load()
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        RecursionError,
        MemoryError,
        OverflowError,
    ) as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e} (corrupt or not a CIFAR-10 pickle)") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, _CheckedArray) or data.dtype != np.uint8:
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
