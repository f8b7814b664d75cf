"""The in-memory data set, class-balanced subsampling and standardisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import DataError


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
        raise DataError(f"{data.name} has only {int(counts.min())} samples in its smallest class "
                        f"(class {int(counts.argmin())}); n_per_class={n_per_class} is too many")
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        keep.append(idx[torch.randperm(idx.numel(), generator=gen)[:n_per_class]].sort().values)
    keep = torch.cat(keep)
    return Dataset(data.name, data.inputs[keep], data.labels[keep], data.num_classes)


def standardize(data: Dataset, eps: float = 1e-8) -> Dataset:
    """Every input coordinate (pixel and channel) to zero mean and unit variance over the samples;
    constant coordinates become 0."""
    x = data.inputs.to(torch.float64)
    mean, std = x.mean(dim=0, keepdim=True), x.std(dim=0, keepdim=True)
    x = (x - mean) / torch.where(std > eps, std, torch.ones_like(std))
    return Dataset(data.name, x, data.labels, data.num_classes)
