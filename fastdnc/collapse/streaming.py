"""NC metrics of a data set seen in batches, never held in memory at once: two passes (class means,
then the scatter around them), reducible over the ranks of a process group."""

from __future__ import annotations

import torch

from .._comm import all_reduce_
from .metrics import _moment_metrics, numerical_rank


class FeatureStatistics:
    """The accumulators of :func:`streaming_feature_metrics` for one feature set: pass 1 the
    per-class counts and sums (:meth:`add_means`), pass 2 the within-class scatter around the means
    (numerically stable, unlike second moments minus squared means), the NCC hits and the negative
    count (:meth:`add_scatter`). ``reduce`` sums an accumulator over processes."""

    def __init__(self, num_classes: int, negative_tol: float = 1e-6) -> None:
        self.k, self.negative_tol = num_classes, negative_tol
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.means: torch.Tensor | None = None
        self.scatter: torch.Tensor | None = None
        self.tallies: torch.Tensor | None = None  # ncc hits, ncc total, negatives, entries

    @torch.no_grad()
    def add_means(self, h: torch.Tensor, labels: torch.Tensor) -> None:
        h = h.to(torch.float64)
        if self.sums is None:
            self.sums = torch.zeros(h.shape[0], self.k, dtype=torch.float64, device=h.device)
            self.counts = torch.zeros(self.k, dtype=torch.float64, device=h.device)
        assert self.counts is not None
        self.sums.index_add_(1, labels, h)
        self.counts += torch.bincount(labels, minlength=self.k).to(self.counts)

    @torch.no_grad()
    def finish_means(self, reduce) -> torch.Tensor:
        if self.sums is None or self.counts is None:
            raise ValueError("streaming_feature_metrics: the batches were empty")
        reduce(self.sums, "reducing class sums")
        reduce(self.counts, "reducing class counts")
        if bool((self.counts == 0).any()):
            raise ValueError(f"class(es) {torch.nonzero(torch.eq(self.counts, 0)).flatten().tolist()} have no samples")
        self.means = self.sums / self.counts
        d = self.means.shape[0]
        self.scatter = torch.zeros(d, d, dtype=torch.float64, device=self.means.device)
        self.tallies = torch.zeros(4, dtype=torch.float64, device=self.means.device)
        return self.means

    @torch.no_grad()
    def add_scatter(
        self,
        h: torch.Tensor,
        labels: torch.Tensor,
        predictions: torch.Tensor | None = None,
        preactivation: torch.Tensor | None = None,
    ) -> None:
        assert self.means is not None and self.scatter is not None and self.tallies is not None
        h = h.to(torch.float64)
        within = h - self.means[:, labels]
        self.scatter.addmm_(within, within.T)
        if predictions is not None:
            dist = torch.cdist(h.T.unsqueeze(0), self.means.T.unsqueeze(0)).squeeze(0)
            self.tallies[0] += float((dist.argmin(dim=1) == predictions).sum())
            self.tallies[1] += h.shape[1]
        if preactivation is not None:
            self.tallies[2] += float((preactivation < -self.negative_tol).sum())
            self.tallies[3] += preactivation.numel()

    def nonnegative(self) -> bool:
        """Whether no entry of the preactivations passed to :meth:`add_scatter` was below ``-negative_tol``."""
        assert self.tallies is not None
        return bool(self.tallies[3] > 0) and float(self.tallies[2]) == 0.0

    @torch.no_grad()
    def metrics(self, reduce, rank_rtol: float = 1e-3, pinv_rtol: float = 1e-10) -> dict[str, float | list[float]]:
        assert self.means is not None and self.scatter is not None and self.tallies is not None
        assert self.counts is not None
        reduce(self.scatter, "reducing the within-class scatter")
        reduce(self.tallies, "reducing the NCC and negative counts")
        out = _moment_metrics(self.means, self.scatter / self.counts.sum(), pinv_rtol)
        sv = torch.linalg.svdvals(self.means)
        out["mean_singular_values"] = sv.tolist()
        out["mean_rank"] = numerical_rank(sv, rank_rtol)
        if self.tallies[1] > 0:
            out["ncc_agreement"] = float(self.tallies[0] / self.tallies[1])
        if self.tallies[3] > 0:
            out["negative_fraction"] = float(self.tallies[2] / self.tallies[3])
        return out


@torch.no_grad()
def streaming_feature_metrics(
    batches,
    num_classes: int,
    *,
    rank_rtol: float = 1e-3,
    pinv_rtol: float = 1e-10,
    negative_tol: float = 1e-6,
    reduce=None,
) -> dict[str, float | list[float]]:
    """:func:`feature_metrics` of a data set seen in batches, never held in memory at once.

    ``batches`` is a callable returning a fresh iterable of ``(h, labels[, predictions[,
    preactivation]])`` with h (d × b): it is called twice (:class:`FeatureStatistics`). ``reduce``
    sums the accumulators over processes (default: :func:`fastdnc.distributed.all_reduce_` when a
    process group is running), so each rank passes its own shard and all get the same result.
    """
    reduce = all_reduce_ if reduce is None else reduce
    stats = FeatureStatistics(num_classes, negative_tol)
    for batch in batches():
        stats.add_means(batch[0], batch[1])
    stats.finish_means(reduce)
    for batch in batches():
        stats.add_scatter(batch[0], batch[1], *batch[2:4])
    return stats.metrics(reduce, rank_rtol, pinv_rtol)
