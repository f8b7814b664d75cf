"""What an :class:`~fastdnc.analysis.result.Analysis` writes: ``analysis.json`` (strict JSON),
``report.md`` (one table row per layer, each outlier count beside the theory's expectation, the
whole model's curvature) and the figures: the layer spectra with the measured outliers in red,
the f_cc' heat maps and the whole model's SLQ density with its top eigenvalues."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .._text import plural
from ..io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from .result import Analysis
    from .tracker import Tracker


def gap_text(ratio: float | None, null_space: bool) -> str:
    """The outlier gap in words: a ratio, or what an infinite one means."""
    if null_space or ratio is None or not math.isfinite(ratio):
        return "the rest is the null space (no bulk)"
    return f"gap ×{ratio:.3g}"


def verdict(layer) -> str:
    """The measured count against the expectation: agrees / differs / no prediction."""
    want = layer.expected.count
    if want is None:
        return "no prediction"
    return "agrees" if layer.outliers == want else f"differs ({layer.outliers} vs {want})"


def markdown(a: Analysis, figures: dict[str, str] | None = None) -> str:
    """The report of one analysis."""
    k = a.num_classes
    lines = [
        f"# DNC lens: {a.description}",
        "",
        f"{a.samples} samples, K = {k} classes, loss {a.loss or 'other (no DNC prediction)'}; analysed in "
        f"{a.seconds:.1f} s" + (f" at step {a.step}" if a.step is not None else "") + ". Raw numbers: `analysis.json`.",
        "",
        "| layer | shape | Hessian | spectrum | outliers | expected at DNC | verdict | gap | f (same) | "
        "f (cross) | κ (same, → 1/K) | max κ (cross, → 0) | overlap top K | overlap top K² | NC1 of its input |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer in a.layers:
        want = layer.expected.count
        lines.append(
            f"| {layer.name} | {layer.shape[0]} × {layer.shape[1]} | {layer.structure} | {layer.spectrum} | "
            f"**{layer.outliers}** | {'—' if want is None else want} ({layer.expected.reason}) | {verdict(layer)} | "
            f"{gap_text(layer.gap_ratio, layer.null_space)} | {layer.f_same:.3f} | {layer.f_cross:.3f} | "
            f"{layer.kappa_same:.3f} | {layer.kappa_cross_max:.2e} | {layer.overlap_top_k:.3f} | "
            f"{layer.overlap_top_k2:.3f} | {layer.collapse.get('nc1', float('nan')):.3g} |"
        )
    if a.model is not None:
        m = a.model
        lines += [
            "",
            f"Whole model ({m.parameters} parameters): {plural(m.outliers, 'outlier')} among its top "
            f"{len(m.eigenvalues)} eigenvalues ({gap_text(m.gap_ratio, m.null_space)}); the fit gradient's overlap "
            f"with the top K is {m.overlap_top_k:.3f} and with the top K² {m.overlap_top_k2:.3f}; "
            f"{m.products} Hessian products.",
        ]
    lines += ["", f"NC1 of the output: {a.output_collapse.get('nc1', float('nan')):.3g}.", ""]
    lines += [f"- {note}" for note in a.notes]
    for key, name in (figures or {}).items():
        lines += [f"![{key}]({name})", ""]
    return "\n".join(lines)


def figures(a: Analysis, folder: Path, prefix: str = "") -> dict[str, str]:
    """The figures of one analysis under ``folder``; returns {key: file name}."""
    from .. import plots

    k = a.num_classes
    out = {
        "spectra": plots.spectra_figure(
            [layer.eigenvalues for layer in a.layers],
            [f"{layer.name}: {layer.spectrum}; expected {layer.expected.count or '—'}" for layer in a.layers],
            [layer.outliers for layer in a.layers],
            f"layer Hessians (measured outliers in red; K = {k}, K² = {k * k})",
            spike_label="{n} outlier{s} (measured)",
            sizes=[layer.parameters for layer in a.layers],
        ),
        "fidelity": plots.fidelity_figure(
            [(f"{layer.name}: f_cc'", layer.f) for layer in a.layers], "class-mean pairs μ_c ⊗ μ_c' as eigenvectors"
        ),
    }
    if a.model is not None and a.model.density:
        out["density"] = plots.density_figure(
            a.model.density_grid,
            a.model.density,
            a.model.eigenvalues[: a.model.outliers],
            f"whole model Hessian (SLQ) and its {plural(a.model.outliers, 'outlier')}",
        )
    return {key: Path(plots.save(fig, folder / f"{prefix}{key}.png")).name for key, fig in out.items()}


def save_analysis(a: Analysis, folder: Path) -> list[Path]:
    """``analysis.json``, ``report.md`` and the figures of ``a`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = figures(a, folder)
    paths = [
        atomic_write_json(folder / "analysis.json", a.to_dict()),
        atomic_write_text(folder / "report.md", markdown(a, names)),
    ]
    return paths + [folder / n for n in names.values()]


def tracker_figures(tracker: Tracker, folder: Path, prefix: str = "") -> dict[str, str]:
    """The paper's figures over training for the tracked network: f and κ against the step (Figs 1
    and 4), the layer spectra at up to six recorded steps with the measured outliers in red
    (Figs 2 and 5, one figure per layer), NC1 of each layer's input."""
    from .. import plots

    records = tracker.records
    if not records:
        return {}
    steps = [int(r.step or 0) for r in records]
    names = [layer.name for layer in records[-1].layers]
    k = records[-1].num_classes

    def series(key):
        return {n: [getattr(r.layer(n), key) for r in records] for n in names}

    out = {
        "alignment": plots.curves_figure(
            steps,
            [
                ("f (same class, → 1 at DNC)", series("f_same")),
                ("f (cross-class, → 1 at DNC)", series("f_cross")),
                ("κ (same class, → 1/K)", series("kappa_same")),
                ("max κ (cross-class, → 0)", series("kappa_cross_max")),
            ],
            f"class-mean pairs as eigenvectors and the gradient's coefficients over training (K = {k})",
        ),
        "collapse": plots.curves_figure(
            steps,
            [
                ("NC1 of the layer's input", {n: [r.layer(n).collapse.get("nc1") for r in records] for n in names}),
                ("outliers (measured)", {n: [float(r.layer(n).outliers) for r in records] for n in names}),
            ],
            "collapse and outlier counts over training",
        ),
    }
    shown = records if len(records) <= 6 else [records[round(i * (len(records) - 1) / 5)] for i in range(6)]
    for n in names:
        layers = [r.layer(n) for r in shown]
        out[f"spectra_{_slug(n)}"] = plots.spectra_figure(
            [layer.eigenvalues for layer in layers],
            [f"step {r.step}: {layer.spectrum}" for r, layer in zip(shown, layers)],
            [layer.outliers for layer in layers],
            f"layer {n}: Hessian spectrum over training (measured outliers in red; expected "
            f"{layers[-1].expected.count or '—'})",
            spike_label="{n} outlier{s}",
            sizes=[layer.parameters for layer in layers],
        )
    return {key: Path(plots.save(fig, folder / f"{prefix}{key}.png")).name for key, fig in out.items()}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name) or "model"


def tracker_markdown(tracker: Tracker, figures: dict[str, str]) -> str:
    """The summary of a Tracker: one row per record and layer."""
    lines = [
        f"# DNC lens over training: {tracker.records[-1].description if tracker.records else 'no records'}",
        "",
        "Raw numbers: `records.json`.",
        "",
        "| step | layer | outliers | expected at DNC | f (same) | f (cross) | κ (same) | max κ (cross) | NC1 of its input |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in tracker.records:
        for layer in r.layers:
            lines.append(
                f"| {r.step} | {layer.name} | {layer.outliers} | {layer.expected.count or '—'} | {layer.f_same:.3f} | "
                f"{layer.f_cross:.3f} | {layer.kappa_same:.3f} | {layer.kappa_cross_max:.2e} | "
                f"{layer.collapse.get('nc1', float('nan')):.3g} |"
            )
    saved = tracker.products_saved()
    if saved is not None:
        lines += ["", f"Warm starts saved {saved:.0%} of the Lanczos products of cold starts."]
    lines.append("")
    for key, name in figures.items():
        lines += [f"![{key}]({name})", ""]
    return "\n".join(lines)
