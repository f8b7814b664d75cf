"""A user's own data as a NumPy ``.npz`` file: ``X`` (N × …, floats) and ``y`` (N, integer labels).

Read with ``allow_pickle=False`` (object arrays are refused: nothing in the file runs) after the zip
container is checked: only the two arrays; each member's uncompressed size (the zip's record) equal
to what its ``.npy`` header declares (a member whose body is shorter than its header claims is a
bomb, since NumPy allocates the declared array before reading), within :data:`MAX_NPZ_BYTES` and
within the memory available (with the float64 copy). Then the values: finite inputs, whole labels
in 0..K−1, as many labels as inputs.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .._memory import require_memory
from .errors import DataError, regular_file
from .sampling import Dataset, check_labels

MAX_NPZ_BYTES = 8 * 2**30
INPUT_KEYS, LABEL_KEYS = ("X", "x", "inputs"), ("y", "labels", "targets")


def _header(z: zipfile.ZipFile, name: str, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with z.open(name) as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            offset = f.tell()
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: member {name!r} is not a .npy array ({e})") from None
    return tuple(shape), np.dtype(dtype), offset


def load_npz(path: str | Path, num_classes: int | None = None) -> Dataset:
    """The data set in ``path`` (see the module docstring); ``num_classes`` defaults to max(y) + 1."""
    path = regular_file(Path(path), "data file")
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path} is not an .npz file ({e})") from None
    with z:
        members = {info.filename.removesuffix(".npy"): info for info in z.infolist()}
        xk = next((k for k in INPUT_KEYS if k in members), None)
        yk = next((k for k in LABEL_KEYS if k in members), None)
        if xk is None or yk is None or len(members) != 2:
            raise DataError(
                f"{path} must hold exactly two arrays, X (inputs) and y (labels); it holds {sorted(members)}"
            )
        arrays = {}
        for key in (xk, yk):
            info = members[key]
            shape, dtype, offset = _header(z, info.filename, path)
            if dtype.hasobject:
                raise DataError(f"{path}: {key} holds Python objects (refused: nothing in a data file is executed)")
            declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if declared > MAX_NPZ_BYTES or info.file_size != offset + declared:
                raise DataError(
                    f"{path}: {key} declares {declared:,} bytes but its member holds {info.file_size - offset:,} "
                    f"(at most {MAX_NPZ_BYTES:,})"
                )
            require_memory(declared + 8 * declared // dtype.itemsize, f"reading {key} of {path}")
            with z.open(info.filename) as f:
                arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    x, y = arrays[xk], arrays[yk]
    if x.dtype.kind not in "fiu" or x.ndim < 2:
        raise DataError(f"{path}: X must be a numeric array of shape (N, …), got {x.dtype} {x.shape}")
    if y.shape[:1] != x.shape[:1]:
        raise DataError(f"{path}: {x.shape[0]} inputs but labels of shape {y.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: X holds {int((~np.isfinite(x)).sum())} NaN/Inf values")
    k = num_classes
    if k is None:
        k = int(np.max(y)) + 1 if y.size and y.dtype.kind in "iu" else 2
    labels = check_labels(y, k, str(path))
    return Dataset(path.name, torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64), torch.from_numpy(labels), k)
