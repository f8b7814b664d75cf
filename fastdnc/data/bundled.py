"""Data sets that need no file: scikit-learn's digits and a locally generated MNIST-1D.

* ``digits``: the 1,797 8 × 8 handwritten digits shipped inside scikit-learn
  (``sklearn.datasets.load_digits``); 10 classes, pixel values 0..16. The ``test`` split is a
  seeded 30% of it, ``train`` the rest.
* ``mnist1d``: Greydanus' MNIST-1D, **regenerated** by the ``mnist1d`` package's generator
  (``mnist1d.data.make_dataset``) with its default arguments (4,000 train and 1,000 test
  sequences of length 40, 10 classes) except ``seed`` (default 0 here, the package's own default
  is 42); the package's download path is never used.

Both need the ``data`` extra (``pip install "torch==2.13.0" -e ".[data]"``).
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import DataError
from .sampling import Dataset


def load_digits(split: str = "train", seed: int = 0) -> Dataset:
    """scikit-learn's digits as (N, 1, 8, 8) images (see the module docstring for the split)."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as e:
        raise DataError("the digits data set needs scikit-learn: pip install the 'data' extra") from e
    d = sk_digits()
    x = torch.from_numpy(d.images.astype(np.float64))[:, None]
    y = torch.from_numpy(d.target.astype(np.int64))
    test = torch.zeros(y.numel(), dtype=torch.bool)
    test[torch.randperm(y.numel(), generator=torch.Generator().manual_seed(seed))[: int(0.3 * y.numel())]] = True
    keep = test if split == "test" else ~test
    return Dataset("digits", x[keep], y[keep], 10)


def load_mnist1d(split: str = "train", seed: int = 0) -> Dataset:
    """MNIST-1D regenerated locally (see the module docstring) as (N, 40) sequences."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise DataError("the mnist1d data set needs the mnist1d package: pip install the 'data' extra") from e
    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    key = "x" if split == "train" else "x_test"
    x = torch.from_numpy(np.asarray(data[key], dtype=np.float64))
    y = torch.from_numpy(np.asarray(data["y" if split == "train" else "y_test"], dtype=np.int64))
    return Dataset("mnist1d", x, y, 10)
