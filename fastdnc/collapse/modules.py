"""NC / DNC metrics of any ``nn.Module`` classifier, through forward hooks on its layers
(:func:`module_collapse_metrics`: ``fd.collapse_metrics(net, (X, y), layers=[...])``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .metrics import CollapseReport, _set_nc3, weight_metrics
from .streaming import FeatureStatistics


@torch.no_grad()
def module_collapse_metrics(
    model: torch.nn.Module,
    data,
    layers: Sequence[torch.nn.Module | str] | None = None,
    *,
    num_classes: int | None = None,
    rank_rtol: float = 1e-3,
    pinv_rtol: float = 1e-10,
) -> CollapseReport:
    """The NC / DNC metrics of any classifier (see :func:`collapse_metrics`): the features entering
    each of ``layers`` (default: the trailing linear head, :func:`fastdnc.capture.trailing_linear_head`)
    and the model's output, streamed over the batches with forward hooks in two passes (class
    means, then the scatter around them); the weight metrics of the ``nn.Linear`` layers against
    their input class means; NC3 of the last layer when it produces the output."""
    from ..batches import read_batches

    batches = read_batches(data)
    names = _layer_names(model, layers, batches[0])
    was = model.training
    model.eval()
    try:
        k = num_classes or _num_classes(model, batches[0])
        stats = module_feature_statistics(model, batches, [(n, "input") for n in names], k)
    finally:
        model.train(was)
    means = [s.means for s in stats]
    report = CollapseReport(names=names)
    report.layers = [s.metrics(_no_reduce, rank_rtol, pinv_rtol) for s in stats]
    mods = dict(model.named_modules())
    for name, m in zip(names, means):
        w = getattr(mods[name], "weight", None)
        if isinstance(w, torch.Tensor) and m is not None and w.ndim == 2 and w.shape[1] == m.shape[0]:
            report.weights.append(weight_metrics(w.detach().to(torch.float64), m, rank_rtol))
    w_last, m_out, m_in = getattr(mods[names[-1]], "weight", None), means[-1], means[-2]
    if (
        isinstance(w_last, torch.Tensor)
        and m_out is not None
        and m_in is not None
        and w_last.shape[0] == m_out.shape[0]
    ):
        _set_nc3(report, w_last.detach().to(torch.float64), m_in)
    return report


def _no_reduce(t: torch.Tensor, what: str = "") -> torch.Tensor:
    return t


@torch.no_grad()
def module_feature_statistics(model: torch.nn.Module, batches, captures, num_classes: int) -> list[FeatureStatistics]:
    """Two passes of the model over ``batches`` (see :func:`fastdnc.capture.captured_passes`): the
    :class:`FeatureStatistics` of every capture (module name, "input" / "output") and, last, of the
    model's output, with their class means set and their scatter accumulated (call ``metrics``). The
    "negative fraction" of a captured feature is that of its own entries (a module's input carries no
    separate pre-activation)."""
    from ..capture import captured_passes, labels_of

    stats = [FeatureStatistics(num_classes) for _ in range(len(captures) + 1)]
    for feats, target, out in captured_passes(model, batches, captures):
        labels = labels_of(target, num_classes)
        for s, h in zip(stats, [*(feats[c] for c in captures), out.reshape(out.shape[0], -1)]):
            s.add_means(h.T, labels)
    for s in stats:
        s.finish_means(_no_reduce)
    for feats, target, out in captured_passes(model, batches, captures):
        labels, pred = labels_of(target, num_classes), out.argmax(dim=1)
        for s, h in zip(stats, [*(feats[c] for c in captures), out.reshape(out.shape[0], -1)]):
            s.add_scatter(h.T, labels, pred, h)  # the features' own sign: the negative fraction of the input
    return stats


def _layer_names(model: torch.nn.Module, layers, batch) -> list[str]:
    from ..capture import trailing_linear_head

    if layers is None:
        return trailing_linear_head(model, batch.args, batch.kwargs)
    named = {m: n for n, m in model.named_modules()}
    out = []
    for layer in layers:
        name = layer if isinstance(layer, str) else named.get(layer)
        if name is None or name not in dict(model.named_modules()):
            raise ValueError(f"{layer!r} is not a submodule of the model")
        out.append(name)
    return out


def _num_classes(model: torch.nn.Module, batch) -> int:
    out = model(*batch.args, **batch.kwargs)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError("the model's output is not (N, K) class scores: pass num_classes")
    return int(out.shape[1])
