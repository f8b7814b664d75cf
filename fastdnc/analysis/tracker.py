r"""The DNC lens over training, from the user's own loop: ``fd.Tracker``.

>>> tracker = fd.Tracker(net, (X, y), torch.nn.CrossEntropyLoss())     # doctest: +SKIP
>>> for step in range(steps):                                          # doctest: +SKIP
...     train_step()
...     if step % 100 == 0:
...         tracker.record(step)
>>> tracker.save("dnc-over-training")                                  # doctest: +SKIP

Each :meth:`Tracker.record` is a full :func:`~fastdnc.analysis.analyze` of the model as it is, and
every Lanczos run in it (the layers too large for an exact spectrum, the whole model's top) starts
from the previous record's top eigenvectors: the outlier space moves slowly during training, so a
warm start needs far fewer products. ``compare_cold=True`` also runs each spectrum cold and keeps
both product counts (:attr:`Tracker.products`), which is how the saving is measured.

:meth:`Tracker.save` writes the records (``records.json``), a summary ``report.md`` and the paper's
figures over training for the user's network: f_cc' and κ_cc' against the step (Figs 1 and 4),
the layer spectra at the recorded steps with the measured outliers in red (Figs 2 and 5), and the
NC1 of each layer's input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from ..io import atomic_write_json, atomic_write_text
from ..models import LayeredModel
from ..spectral.exact import DENSE_LIMIT
from .analyze import TOL, analyze_source
from .result import Analysis
from .sources import LayeredSource, LayerSource, ModuleSource


class Tracker:
    """Analyses of one model at chosen steps of its training (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        data=None,
        loss_fn: Callable | None = None,
        layers: Sequence[nn.Module | str] | None = None,
        *,
        model_curvature: bool = True,
        density: bool = False,
        extra: int = 10,
        dense_limit: int = DENSE_LIMIT,
        tol: float = TOL,
        warm: bool = True,
        compare_cold: bool = False,
        progress: bool = False,
    ) -> None:
        self.model, self.data, self.loss_fn, self.layers = model, data, loss_fn, layers
        self.options = dict(
            model_curvature=model_curvature, density=density, extra=extra, dense_limit=dense_limit, tol=tol
        )
        self.warm, self.compare_cold, self.progress = warm, compare_cold, progress
        self.records: list[Analysis] = []
        self.products: list[dict[str, int]] = []  # per record: warm (and cold) operator products

    def _source(self) -> LayerSource:
        if isinstance(self.model, LayeredModel):
            return LayeredSource(self.model)
        if self.data is None or self.loss_fn is None:
            raise ValueError(f"a Tracker of a {type(self.model).__name__} needs its data and loss_fn")
        return ModuleSource(self.model, self.data, self.loss_fn, self.layers)

    def record(self, step: int, model: nn.Module | None = None) -> Analysis:
        """Analyse the model now (evaluation mode; its mode is restored) and keep the result.
        ``model``: analyse this one from now on instead (e.g. a network's head rebuilt on its
        backbone's current features, :meth:`fastdnc.networks.BackboneHead.head`); the warm starts
        carry over when its layers have the same shapes."""
        self.model = self.model if model is None else model
        was = self.model.training
        self.model.eval()
        try:
            source = self._source()
            starts = self.records[-1].vectors if (self.warm and self.records) else None
            label = f"record step {step}" if self.progress else None
            res = analyze_source(source, starts=starts, label=label, **self.options)  # type: ignore[arg-type]
            counts = {"warm" if starts else "cold": _products(res)}
            if self.compare_cold and starts:
                counts["cold"] = _products(analyze_source(source, **self.options))  # type: ignore[arg-type]
        finally:
            self.model.train(was)
        res.step = int(step)
        self.records.append(res)
        self.products.append(counts)
        return res

    def products_saved(self) -> float | None:
        """1 − (warm products / cold products) over the records measured both ways (``compare_cold``)."""
        both = [c for c in self.products if "warm" in c and "cold" in c]
        cold = sum(c["cold"] for c in both)
        return None if not both or cold == 0 else 1.0 - sum(c["warm"] for c in both) / cold

    def restore(self, record: dict) -> Analysis:
        """Keep a record read back from ``records.json`` (an interrupted run's earlier steps; it has no
        eigenvectors, so the next record starts cold)."""
        res = Analysis.from_dict(record)
        self.records.append(res)
        self.products.append({"cold": _products(res)})
        return res

    def to_dict(self) -> dict:
        return {
            "records": [r.to_dict() for r in self.records],
            "products": self.products,
            "products_saved": self.products_saved(),
        }

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """``records.json``, ``report.md`` and the figures over training in ``folder``."""
        from .report import tracker_figures, tracker_markdown

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = tracker_figures(self, folder)
        paths = [
            atomic_write_json(folder / "records.json", self.to_dict()),
            atomic_write_text(folder / "report.md", tracker_markdown(self, names)),
        ]
        return paths + [folder / n for n in names.values()]


def _products(res: Analysis) -> int:
    return sum(layer.products for layer in res.layers) + (0 if res.model is None else res.model.products)
