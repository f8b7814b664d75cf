"""The in-memory data set, class-balanced subsampling and standardisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError


def check_labels(labels: Sequence | np.ndarray | torch.Tensor, num_classes: int, source: str) -> np.ndarray:
    """``labels`` as an int64 NumPy vector, or :class:`DataError` naming ``source`` when they are not
    whole numbers in 0..num_classes−1 (strings, NaN/Inf, fractions, out of range)."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"{source}: labels must be a vector, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError(f"{source}: {int((~np.isfinite(arr)).sum())} labels are NaN or infinite")
        if not (arr == np.round(arr)).all():
            raise DataError(f"{source}: labels must be whole numbers, found {arr[arr != np.round(arr)][0].item()!r}")
    elif arr.dtype.kind not in "iu":
        raise DataError(
            f"{source}: labels must be integers, got {arr.dtype} values"
            + (f" such as {arr.flat[0].item()!r}" if arr.size else "")
        )
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)][0].item()
        raise DataError(f"{source}: label {bad!r} is outside 0..{num_classes - 1}")
    return arr.astype(np.int64)


@dataclass
class Dataset:
    """``inputs`` (N × C × H × W images, or N × D vectors), ``labels`` (N,) int64 in 0..K−1,
    sorted by class (sample i of class c is row c·n + i when balanced)."""

    name: str
    inputs: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.name}: {self.inputs.shape[0]} inputs but {self.labels.shape[0]} labels")
        if self.labels.dtype != torch.int64:
            self.labels = torch.from_numpy(check_labels(self.labels, self.num_classes, self.name))
        elif self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            check_labels(self.labels, self.num_classes, self.name)
        order = torch.sort(self.labels, stable=True).indices
        self.inputs, self.labels = self.inputs[order], self.labels[order]

    @property
    def num_samples(self) -> int:
        return self.labels.shape[0]

    def flat(self) -> torch.Tensor:
        """Inputs as (D × N) columns, the layout of :class:`~fastdnc.models.MLPHead`."""
        return self.inputs.reshape(self.num_samples, -1).T.contiguous()

    def to(self, dtype: torch.dtype) -> Dataset:
        return Dataset(self.name, self.inputs.to(dtype), self.labels, self.num_classes)


def balanced_subsample(data: Dataset, n_per_class: int, seed: int = 0) -> Dataset:
    """``n_per_class`` samples of every class, drawn without replacement from a generator seeded
    with ``seed``, in class order."""
    if n_per_class < 1:
        raise DataError(f"n_per_class must be >= 1, got {n_per_class}")
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    if int(counts.min()) < n_per_class:
        raise DataError(
            f"{data.name} has only {int(counts.min())} samples in its smallest class "
            f"(class {int(counts.argmin())}); n_per_class={n_per_class} is too many"
        )
    gen = torch.Generator().manual_seed(seed)
    keep: list[torch.Tensor] = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        keep.append(idx[torch.randperm(idx.numel(), generator=gen)[:n_per_class]].sort().values)
    rows = torch.cat(keep)
    return Dataset(data.name, data.inputs[rows], data.labels[rows], data.num_classes)


def standardize(data: Dataset, eps: float = 1e-8, reference: Dataset | None = None) -> Dataset:
    """Every input coordinate (pixel and channel) to zero mean and unit variance over the samples
    of ``reference`` (default: ``data`` itself; a held-out split uses the training split's);
    constant coordinates become 0."""
    x = data.inputs.to(torch.float64)
    ref = x if reference is None else reference.inputs.to(torch.float64)
    mean, std = ref.mean(dim=0, keepdim=True), ref.std(dim=0, keepdim=True)
    x = (x - mean) / torch.where(std > eps, std, torch.ones_like(std))
    return Dataset(data.name, x, data.labels, data.num_classes)
