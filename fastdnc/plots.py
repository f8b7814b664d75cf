"""Figures (matplotlib, headless Agg backend), saved atomically as PNG.

Every figure has labelled axes, a legend when it has several lines, and log scales where the
quantity spans decades.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402
from .train import History  # noqa: E402


def save(fig, path: str | os.PathLike, dpi: int = 130) -> str:
    """Write ``fig`` to ``path`` atomically as PNG and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def _positive(xs: Sequence[float | None], ys: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """Pairs with x > 0 and finite y > 0 (what a log-log axis can show)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x and y is not None and math.isfinite(y) and y > 0]
    return [p[0] for p in pts], [p[1] for p in pts]


def loss_figure(history: History, optimal_loss: float | None, title: str) -> plt.Figure:
    """Loss terms against the step (log-log); with ``optimal_loss``, the gap to the optimum too."""
    fig, axes = plt.subplots(1, 2 if optimal_loss is not None else 1, figsize=(11 if optimal_loss else 5.5, 4))
    axes = list(axes) if optimal_loss is not None else [axes]
    ax = axes[0]
    for key, label in (("loss", "total loss"), ("fit_loss", "fit term"), ("reg_loss", "decay term")):
        if key in history:
            ax.plot(*_positive(history.steps, history[key]), label=label)
    if optimal_loss is not None:
        ax.axhline(optimal_loss, color="k", ls="--", lw=1, label=f"theory optimum {optimal_loss:.4g}")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="loss", title=title)
    ax.legend()
    if optimal_loss is not None:
        gap = [None if v is None else v - optimal_loss for v in history["loss"]]
        axes[1].plot(*_positive(history.steps, gap), color="C3")
        axes[1].set(
            xscale="log",
            yscale="log",
            xlabel="step",
            ylabel=r"loss $-$ optimal loss",
            title="distance to the closed-form optimum",
        )
    for a in axes:
        a.grid(True, which="major", alpha=0.3)
    return fig


def _panel_grid(n: int, width: float = 4.6, height: float = 3.6):
    """A figure with n panels, at most three a row, and the axes as a flat list."""
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, list(axes.flat)


def _finish_grid(fig, axes: list, used: int, title: str) -> plt.Figure:
    """Hide the panels past ``used``, add the title, tighten."""
    for ax in axes[used:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def metrics_figure(history: History, metrics: Sequence[tuple[str, str]], depth: int, title: str) -> plt.Figure:
    """One panel per metric (log-log against the step), one line per layer ``<metric>/l<l>``."""
    fig, axes = _panel_grid(len(metrics))
    for ax, (key, label) in zip(axes, metrics):
        for l in range(1, depth + 2):
            name = f"{key}/l{l}"
            if name in history:
                xs, ys = _positive(history.steps, history[name])
                if xs:
                    ax.plot(xs, ys, label=f"layer {l}" if l <= depth else "output Z")
        ax.set(xscale="log", yscale="log", xlabel="step", ylabel=label)
        ax.grid(True, which="major", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return _finish_grid(fig, axes, len(metrics), title)


def singular_values_figure(
    singular_values: Sequence[Sequence[float]], predicted: Sequence[float] | None, title: str
) -> plt.Figure:
    """Singular values of each W_l (log scale), with the predicted common value of the top K."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for l, sv in enumerate(singular_values, start=1):
        ax.plot(range(1, len(sv) + 1), [max(s, 1e-300) for s in sv], "o-", ms=3, label=f"$W_{{{l}}}$")
        if predicted is not None:
            ax.axhline(predicted[l - 1], color=f"C{l - 1}", ls="--", lw=0.8)
    ax.set(yscale="log", xlabel="index", ylabel="singular value", title=title)
    if predicted is not None:
        ax.plot([], [], "k--", lw=0.8, label="theory $s_l$")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def spectra_figure(spectra: Sequence[Sequence[float]], labels: Sequence[str], spikes: int, title: str) -> plt.Figure:
    """Histograms of eigenvalues (log-spaced bins of |λ|), the top ``spikes`` drawn as spikes."""
    import numpy as np

    fig, axes = _panel_grid(len(spectra), width=4.8)
    for ax, spectrum, label in zip(axes, spectra, labels):
        ev = np.sort(np.asarray(spectrum))[::-1]
        top, bulk = ev[:spikes], ev[spikes:]
        floor = 1e-12 * float(np.abs(ev).max()) if ev.size else 0.0  # below: numerical zeros
        pos = np.abs(bulk[np.abs(bulk) > floor]) if bulk.size else np.array([])
        zeros = bulk.size - pos.size
        if pos.size:
            lo, hi = np.log10(pos.min()), np.log10(max(pos.max(), np.abs(top).max() if top.size else pos.max()))
            bulk_label = f"bulk ({pos.size})" + (f"; {zeros} below 1e-12·max not shown" if zeros else "")
            ax.hist(pos, bins=np.logspace(lo, hi + 1e-9, 40), color="C0", alpha=0.7, label=bulk_label)
        elif zeros:
            ax.plot([], [], " ", label=f"bulk: {zeros} numerical zeros (< 1e-12·max)")
        for i, t in enumerate(top):
            ax.axvline(abs(t), color="C3", lw=1, label=f"top {spikes}" if i == 0 else None)
        ax.set(xscale="log", xlabel="|eigenvalue|", ylabel="count", title=label)
        shown = np.abs(np.concatenate([top, pos]))
        shown = shown[shown > 0]
        if shown.size:  # at least a decade either side, so that equal spikes do not squash the axis
            ax.set_xlim(min(shown.min(), shown.max() / 100) / 3, shown.max() * 3)
        ax.legend(fontsize=7)
    return _finish_grid(fig, axes, len(spectra), title)


def levels_figure(panels: Sequence[tuple[str, Sequence[float], Sequence[tuple[float, int]]]], title: str) -> plt.Figure:
    """Sorted eigenvalues (descending, symmetric-log axis) with predicted levels as dashed lines.

    ``panels``: (label, measured eigenvalues, [(predicted value, multiplicity), …]).
    """
    import numpy as np

    fig, axes = _panel_grid(len(panels), width=5.6, height=4.0)
    for ax, (label, spectrum, levels) in zip(axes, panels):
        ev = np.sort(np.asarray(spectrum))[::-1]
        ax.plot(np.arange(1, ev.size + 1), ev, ".", ms=3, color="C0", label="measured")
        for i, (value, mult) in enumerate(sorted(levels, key=lambda x: -x[0])):
            ax.axhline(value, color=f"C{(i % 8) + 1}", ls="--", lw=0.9, label=f"theory {value:.4g} (×{mult})")
        predicted = [abs(v) for v, _ in levels if v != 0]
        thresh = min(predicted) / 10 if predicted else max(float(np.abs(ev).max()), 1e-300) * 1e-3
        ax.set_yscale("symlog", linthresh=thresh)  # linear within ±thresh: numerical zeros sit on 0
        top = max(predicted + [float(np.abs(ev).max())])
        ax.set_ylim(-10 * thresh, 3 * top)
        ax.set(xscale="log", xlabel="index (descending)", ylabel="eigenvalue", title=label)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    return _finish_grid(fig, axes, len(panels), title)


def density_figure(grid: Sequence[float], density: Sequence[float], top: Sequence[float], title: str) -> plt.Figure:
    """An SLQ spectral density (log y) with the top eigenvalues drawn as spikes."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs, ys = [], []
    for x, y in zip(grid, density):
        if y > 0:
            xs.append(x)
            ys.append(y)
    ax.plot(xs, ys, color="C0", label="SLQ density")
    for i, t in enumerate(top):
        ax.axvline(t, color="C3", lw=0.8, alpha=0.8, label=f"top {len(top)} (Lanczos)" if i == 0 else None)
    ax.set(yscale="log", xlabel="eigenvalue", ylabel="density", title=title)
    if ys:
        ax.set_ylim(max(ys) * 1e-8, max(ys) * 3)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
