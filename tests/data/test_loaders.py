"""Loaders against tiny files written here in the exact on-disk formats, and their errors."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from data_files import make_cifar, make_mnist

from fastdnc.data import DataError, load_dataset, read_idx


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_mnist_idx_round_trip(tmp_path, compress):
    images, labels = make_mnist(tmp_path, compress=compress)
    np.testing.assert_array_equal(read_idx(next((tmp_path / "MNIST" / "raw").glob("train-images*"))), images)
    d = load_dataset("mnist", tmp_path, standardise=False)
    assert d.inputs.shape == (30, 1, 28, 28) and d.num_classes == 10 and d.inputs.dtype == torch.float64
    assert torch.equal(d.labels, torch.sort(torch.from_numpy(labels.astype(np.int64))).values)  # class order
    first = np.nonzero(labels == 0)[0][0]
    torch.testing.assert_close(d.inputs[0, 0], torch.from_numpy(images[first] / 255.0))
    s = load_dataset("mnist", tmp_path, n_per_class=2)
    assert torch.equal(s.labels, torch.arange(10).repeat_interleave(2))
    flat = s.flat()
    assert flat.shape == (784, 20)
    torch.testing.assert_close(flat.mean(1), torch.zeros(784), atol=1e-12, rtol=0)


def test_mnist_errors_name_the_files(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw.*train-images-idx3-ubyte.*nothing is downloaded"):
        load_dataset("mnist", tmp_path)
    make_mnist(tmp_path)
    folder = tmp_path / "MNIST" / "raw"
    img = folder / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-100])  # truncated
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated"):
        load_dataset("mnist", tmp_path)
    img.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)  # wrong magic number
    with pytest.raises(DataError, match="bad magic number 12340803"):
        load_dataset("mnist", tmp_path)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage")
    os.remove(img)
    with pytest.raises(DataError, match="cannot read IDX file"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="smallest class"):
        make_mnist(tmp_path / "x")
        load_dataset("mnist", tmp_path / "x", n_per_class=50)


def test_cifar_pickles(tmp_path):
    folder = make_cifar(tmp_path)
    d = load_dataset("cifar10", tmp_path, standardise=False)
    assert d.inputs.shape == (50, 3, 32, 32) and d.num_classes == 10
    with open(folder / "data_batch_1", "rb") as f:
        b = pickle.load(f, encoding="bytes")
    # the first image of the first batch, red plane, row 0
    c = b[b"labels"][0]
    idx = int(torch.nonzero(d.labels == c)[0])
    assert d.inputs.shape[0] == 50
    candidates = [i for i in range(50) if d.labels[i] == c]
    assert any(torch.allclose(d.inputs[i, 0, 0], torch.from_numpy(b[b"data"][0, :32] / 255.0)) for i in candidates)
    assert idx in candidates
    t = load_dataset("cifar10", tmp_path, split="test", standardise=False)
    assert t.inputs.shape == (10, 3, 32, 32)


def test_cifar_errors(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*data_batch_1.*nothing is downloaded"):
        load_dataset("cifar10", tmp_path)
    folder = make_cifar(tmp_path)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", tmp_path)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, f)
    with pytest.raises(DataError, match="3072"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("name, shape", [("digits", (1, 8, 8)), ("mnist1d", (40,))])
def test_bundled_data_sets_are_deterministic(name, shape):
    a = load_dataset(name, n_per_class=5, seed=3)
    b = load_dataset(name, n_per_class=5, seed=3)
    assert a.inputs.shape == (50, *shape) and torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.labels, torch.arange(10).repeat_interleave(5))
    test = load_dataset(name, split="test")
    assert test.num_samples > 0


def test_bad_requests():
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="split"):
        load_dataset("digits", split="val")
