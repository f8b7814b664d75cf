"""Tiny files in the exact on-disk formats of MNIST (IDX) and CIFAR-10 (pickle batches), written
for the loader tests and the real-data experiment tests."""

from __future__ import annotations

import gzip
import pickle

import numpy as np


def write_idx(path, array: np.ndarray, code: int = 0x08, compress: bool = False) -> None:
    head = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = head + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def make_mnist(root, n=30, compress=False, split="train"):
    rng = np.random.default_rng(0)
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)[::-1].copy()
    sfx = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", images, compress=compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", labels, compress=compress)
    return images, labels


def make_cifar(root, per_batch=10):
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [(i + b * per_batch) % 10 for i in range(per_batch)],
            b"batch_label": b"x",
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder
