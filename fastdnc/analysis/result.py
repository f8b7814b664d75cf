"""The typed results of the DNC lens: one :class:`LayerAnalysis` per analysed layer, a
:class:`ModelCurvature` for the whole model, and the :class:`Analysis` that holds them, with
``to_dict()`` (strict JSON: an infinite gap is ``None`` with ``null_space: true``) and ``save(dir)``
(``analysis.json``, ``report.md`` and the figures).

The result keys are the package's one vocabulary (the UFM experiments, the real-data preset and the
command line use the same): ``outliers`` (the measured count), ``gap_ratio``, ``expected_outliers``,
``f_same`` / ``f_cross`` (the mean f_cc' on and off the diagonal), ``kappa_same`` /
``kappa_cross_max``, ``overlap_top_k`` / ``overlap_top_k2`` (the fit gradient's Gur-Ari overlap).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..alignment import alignment_summary
from ..theory.expectations import Expectation


def finite_or_none(x: float | None) -> float | None:
    """A float for strict JSON: ``None`` for NaN and ±∞ (the field beside it says why)."""
    return None if x is None or not math.isfinite(x) else float(x)


def _gap(ratio: float | None, null_space: bool) -> float:
    """The gap ratio written as ``None``: infinite at a null space, else not a number."""
    return float(ratio) if ratio is not None else (math.inf if null_space else math.nan)


def _known(cls: type, d: dict) -> dict:
    """The entries of ``d`` that are fields of the dataclass ``cls``."""
    return {f.name: d[f.name] for f in fields(cls) if f.name in d}


@dataclass
class LayerAnalysis:
    """One layer through the DNC lens (see the module docstring for the keys)."""

    name: str
    index: int
    shape: tuple[int, int]
    structure: str
    spectrum: str
    complete: bool
    eigenvalues: list[float]
    outliers: int
    gap_ratio: float
    null_space: bool
    expected: Expectation
    f: list[list[float]]
    kappa: list[list[float]]
    overlap_top_k: float
    overlap_top_k2: float
    collapse: dict
    products: int = 0

    @property
    def parameters(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def summary(self) -> dict[str, float]:
        """f and κ in the package's vocabulary (:func:`fastdnc.alignment.alignment_summary`)."""
        return alignment_summary(torch.tensor(self.f), torch.tensor(self.kappa))

    @property
    def f_same(self) -> float:
        return self.summary["f_same"]

    @property
    def f_cross(self) -> float:
        return self.summary["f_cross"]

    @property
    def kappa_same(self) -> float:
        return self.summary["kappa_same"]

    @property
    def kappa_cross_max(self) -> float:
        return self.summary["kappa_cross_max"]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["expected_outliers"] = self.expected.to_dict()
        del out["expected"]
        out["gap_ratio"] = finite_or_none(self.gap_ratio)
        out.update(parameters=self.parameters, **{k: finite_or_none(v) for k, v in self.summary.items()})
        return out

    @classmethod
    def from_dict(cls, d: dict) -> LayerAnalysis:
        """The inverse of :meth:`to_dict`."""
        kw = _known(cls, {**d, "expected": Expectation(**d["expected_outliers"])})
        kw.update(shape=tuple(d["shape"]), gap_ratio=_gap(d["gap_ratio"], d["null_space"]))
        return cls(**kw)


@dataclass
class ModelCurvature:
    """The whole model's Hessian: its top eigenvalues (Lanczos), outliers among them, the fit
    gradient's overlap with the top K and K² eigenvectors, and its SLQ density."""

    parameters: int
    eigenvalues: list[float]
    outliers: int
    gap_ratio: float
    null_space: bool
    overlap_top_k: float
    overlap_top_k2: float
    density_grid: list[float] = field(default_factory=list)
    density: list[float] = field(default_factory=list)
    products: int = 0  # of the Lanczos run (warm-started in a Tracker)
    density_products: int = 0  # of the SLQ density

    def to_dict(self) -> dict:
        out = asdict(self)
        out["gap_ratio"] = finite_or_none(self.gap_ratio)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> ModelCurvature:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**_known(cls, d), "gap_ratio": _gap(d["gap_ratio"], d["null_space"])})


@dataclass
class Analysis:
    """Every analysed layer, the whole model's curvature (``None`` when not asked for) and the NC
    metrics of the output, of one model at one moment (``step`` in a :class:`~fastdnc.analysis.Tracker`)."""

    description: str
    num_classes: int
    loss: str | None
    samples: int
    layers: list[LayerAnalysis]
    model: ModelCurvature | None
    output_collapse: dict
    seconds: float
    step: int | None = None
    notes: list[str] = field(default_factory=list)
    vectors: dict = field(default_factory=dict, repr=False)  # top eigenvectors per layer (warm starts)

    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "num_classes": self.num_classes,
            "loss": self.loss,
            "samples": self.samples,
            "step": self.step,
            "seconds": self.seconds,
            "notes": self.notes,
            "layers": [layer.to_dict() for layer in self.layers],
            "model": None if self.model is None else self.model.to_dict(),
            "output_collapse": self.output_collapse,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Analysis:
        """The inverse of :meth:`to_dict`, without the eigenvectors (which are not written): a record
        read back from ``records.json`` after an interrupted run."""
        layers = [LayerAnalysis.from_dict(layer) for layer in d["layers"]]
        model = None if d["model"] is None else ModelCurvature.from_dict(d["model"])
        return cls(**{**_known(cls, d), "layers": layers, "model": model})

    def layer(self, name: str) -> LayerAnalysis:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no analysed layer {name!r}; analysed: {[layer.name for layer in self.layers]}")

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """Write ``analysis.json``, ``report.md`` and the figures into ``folder``; returns the paths."""
        from .report import save_analysis

        return save_analysis(self, Path(folder))
