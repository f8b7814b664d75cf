"""Figures (matplotlib, headless Agg backend), saved atomically as PNG.

Every figure has labelled axes, a legend when it has several lines, and log scales where the
quantity spans decades.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402
from .training import History  # noqa: E402


class FigureWriter:
    """Draws and saves figures, here (``workers=0``) or in a background worker process.

    A multi-panel figure takes a second or more to draw. The reproduce presets train one model at a
    time on one thread (small GEMMs), so a worker process on the other core draws an experiment's
    figures while the next one trains. ``draw`` takes the name of a figure function of this module
    (an allow-list: nothing else can be called) and its plain-data arguments, and returns the file
    name at once; :meth:`wait` (also on leaving the ``with`` block) returns when every file is
    written and raises the first drawing error.
    """

    def __init__(self, workers: int = 0) -> None:
        self._pool = None
        if workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: a fresh interpreter (forking a process whose torch holds OpenMP threads is unsafe)
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        self._pending: list = []

    @property
    def background(self) -> bool:
        return self._pool is not None

    def draw(self, path: str | os.PathLike, figure: str, *args, **kwargs) -> str:
        if figure not in FIGURES:
            raise ValueError(f"unknown figure {figure!r}; choose one of {sorted(FIGURES)}")
        if self._pool is None:
            _draw(figure, path, args, kwargs)
        else:
            self._pending.append(self._pool.submit(_draw, figure, path, args, kwargs))
        return Path(path).name

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self) -> FigureWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


def _draw(figure: str, path: str | os.PathLike, args: tuple, kwargs: dict) -> None:
    save(FIGURES[figure](*args, **kwargs), path)


def save(fig, path: str | os.PathLike, dpi: int = 130) -> str:
    """Write ``fig`` to ``path`` atomically as PNG and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # the layout is constrained: no second, "tight" draw
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def _positive(xs: Sequence[float | None], ys: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """Pairs with x > 0 and finite y > 0 (what a log-log axis can show)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x and y is not None and math.isfinite(y) and y > 0]
    return [p[0] for p in pts], [p[1] for p in pts]


def loss_figure(
    history: History, reference: float | None, title: str, reference_name: str = "theory optimum"
) -> plt.Figure:
    """Loss terms against the step (log-log); with a ``reference`` loss (the closed-form optimum,
    the CE DNC critical point), its line and the gap to it (``reference_name`` names it)."""
    fig, axes = plt.subplots(
        1, 2 if reference is not None else 1, figsize=(11 if reference else 5.5, 4), layout="constrained"
    )
    axes = list(axes) if reference is not None else [axes]
    ax = axes[0]
    for key, label in (("loss", "total loss"), ("fit_loss", "fit term"), ("reg_loss", "decay term")):
        if key in history:
            ax.plot(*_positive(history.steps, history[key]), label=label)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"{reference_name} {reference:.4g}")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="loss", title=_two_lines(title, 45))
    ax.legend()
    if reference is not None:
        gap = [None if v is None else abs(v - reference) for v in history["loss"]]
        below = any(v is not None and v < reference * (1 - 1e-9) for v in history["loss"])
        axes[1].plot(*_positive(history.steps, gap), color="C3")
        axes[1].set(
            xscale="log",
            yscale="log",
            xlabel="step",
            ylabel=f"|loss − {reference_name}|",
            title=f"distance to the {reference_name}" + (" (training went below it)" if below else ""),
        )
    for a in axes:
        a.grid(True, which="major", alpha=0.3)
    return fig


def panel_grid(n: int, width: float = 4.6, height: float = 3.6):
    """A figure with n panels and the axes as a flat list: two a row for 2 and 4 panels, else three
    (readable at page width; a blank cell of the last row is hidden)."""
    cols = 1 if n == 1 else 2 if n in (2, 4) else 3
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    return fig, list(axes.flat)


def finish_grid(fig, axes: list, used: int, title: str) -> plt.Figure:
    """Hide the panels past ``used`` and add the title (the layout is constrained)."""
    for ax in axes[used:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


# metric -> the logged rank that its value depends on: a drop of the rank is marked on the curve
RANK_OF = {"nc1": "nc1_rank"}


def metrics_figure(
    history: History, metrics: Sequence[tuple[str, ...]], depth: int, title: str, note: str | None = None
) -> plt.Figure:
    """One panel per metric against the step (log x), one line per layer ``<metric>/l<l>``.

    ``metrics``: ``(key, label)`` on a log y axis, or ``(key, label, "linear")`` for a quantity
    that is exactly 0 where it matters (a fraction). Where :data:`RANK_OF` names the rank a metric
    depends on (NC1: the rank of Σ_B in its pseudo-inverse), the steps where that rank drops are
    marked: the value jumps there because a direction left the pseudo-inverse, not by collapse.
    ``note``: a line under the panels (e.g. that the run is not at the point the theory describes).
    """
    fig, axes = panel_grid(len(metrics))
    for ax, (key, label, *scale) in zip(axes, metrics):
        linear = scale == ["linear"]
        marked = False
        for l in range(1, depth + 2):
            name = f"{key}/l{l}"
            if name not in history:
                continue
            if linear:
                pts = [(x, y) for x, y in zip(history.steps, history[name]) if x and y is not None and math.isfinite(y)]
                xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
            else:
                xs, ys = _positive(history.steps, history[name])
            if not xs:
                continue
            line = ax.plot(xs, ys, label=f"layer {l}" if l <= depth else "output Z")[0]
            rank = f"{RANK_OF.get(key)}/l{l}"
            if rank in history:
                value = dict(zip(history.steps, history[name]))
                ranks = [(x, r) for x, r in zip(history.steps, history[rank]) if r is not None]
                drops = [x for (_, a), (x, b) in zip(ranks, ranks[1:]) if b < a and value.get(x)]
                if drops:
                    ax.plot(drops, [value[x] for x in drops], "v", color=line.get_color(), ms=6)
                    marked = True
        if marked:  # one legend entry, after the layers
            ax.plot([], [], "v", color="0.3", ms=6, label="rank of Σ_B drops (a jump, not collapse)")
        ax.set(xscale="log", yscale="linear" if linear else "log", xlabel="step", ylabel=label)
        ax.grid(True, which="major", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if note:
        fig.supxlabel(note, fontsize=8)
    return finish_grid(fig, axes, len(metrics), title)


def singular_values_figure(
    singular_values: Sequence[Sequence[float]], predicted: Sequence[float] | None, title: str
) -> plt.Figure:
    """Singular values of each W_l (log scale), with the predicted common value of the top K."""
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for l, sv in enumerate(singular_values, start=1):
        ax.plot(range(1, len(sv) + 1), [max(s, 1e-300) for s in sv], "o-", ms=3, label=f"$W_{{{l}}}$")
        if predicted is not None:
            ax.axhline(predicted[l - 1], color=f"C{l - 1}", ls="--", lw=0.8)
    ax.set(yscale="log", xlabel="index", ylabel="singular value", title=_two_lines(title))
    if predicted is not None:
        ax.plot([], [], "k--", lw=0.8, label="theory $s_l$")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def spectra_figure(
    spectra: Sequence[Sequence[float]],
    labels: Sequence[str],
    spikes: int | Sequence[int],
    title: str,
    spike_label: str = "top {n}",
    sizes: Sequence[int] | None = None,
) -> plt.Figure:
    """Histograms of eigenvalues (log-spaced bins of |λ|): the top ``spikes`` in red, the rest (the
    bulk) in blue, on shared bins, so that a bar's height counts the eigenvalues in it (sixteen
    equal outliers make one bar of 16).

    ``spikes``: one count for every panel, or one per panel (e.g. each layer's measured outlier
    count); ``spike_label`` names them (``{n}`` is the count). A panel with no bulk left (every other
    eigenvalue a numerical zero) says how many zeros there are. ``sizes``: the operators' dimensions, for panels
    that hold only the top of a spectrum (Lanczos): the legend then says how much was computed.
    """
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    counts = [spikes] * len(spectra) if isinstance(spikes, int) else list(spikes)
    dims = list(sizes) if sizes is not None else [len(x) for x in spectra]
    fig, axes = panel_grid(len(spectra), width=4.8)
    for ax, spectrum, label, n_top, dim in zip(axes, spectra, labels, counts, dims):
        ev = np.sort(np.asarray(spectrum))[::-1]
        floor = 1e-12 * float(np.abs(ev).max()) if ev.size else 0.0  # below: numerical zeros
        top, bulk = np.abs(ev[:n_top][np.abs(ev[:n_top]) > floor]), ev[n_top:]
        pos = np.abs(bulk[np.abs(bulk) > floor]) if bulk.size else np.array([])
        zeros = ev.size - top.size - pos.size
        top_label = spike_label.format(n=n_top, s="" if n_top == 1 else "s")
        top_label += f" ({top.size} nonzero)" if top.size < min(n_top, ev.size) else ""
        shown = np.concatenate([top, pos])
        if shown.size:
            # the data's range and a factor 3 either side (equal values still get a readable axis); the
            # outliers and the bulk share the bins, so a bar's height is how many eigenvalues it holds
            lo, hi = np.log10(shown.min() / 3), np.log10(shown.max() * 3)
            bins = np.logspace(lo, hi, 48)
            if pos.size:
                bulk_label = f"bulk ({pos.size})" if ev.size == dim else f"the rest of the top {ev.size} ({pos.size})"
                bulk_label += f"; {zeros} below 1e-12·max not shown" if zeros else ""
                bulk_label += f"; {dim - ev.size} not computed" if ev.size < dim else ""
                ax.hist(pos, bins=bins, color="C0", alpha=0.7, label=bulk_label)
            if top.size:
                ax.hist(top, bins=bins, color="C3", alpha=0.9, label=top_label)
            ax.set_xlim(bins[0], bins[-1])
        if not pos.size:
            note = f"no bulk: the other {zeros} eigenvalues are\nnumerical zeros (< 1e-12·max)" if zeros else "no bulk"
            ax.text(0.5, 0.5, note, transform=ax.transAxes, fontsize=8, ha="center", va="center", backgroundcolor="w")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xscale="log", xlabel="|eigenvalue|", ylabel="count", title=label)
        ax.set_ylim(0, max(ax.get_ylim()[1], 1) * 1.35)  # head room for the legend above the bars
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
    return finish_grid(fig, axes, len(spectra), title)


def _two_lines(title: str, width: int = 60) -> str:
    """A long "what: detail" title on two lines, so that a single-panel figure does not cut it."""
    return title.replace(": ", ":\n", 1) if len(title) > width and ": " in title else title


def _symlog_ticks(ax, thresh: float, lo: float, hi: float) -> None:
    """Major ticks of a symlog axis: 0, and the decades outside the linear band ±``thresh`` (at
    least a decade from it, so that no two labels overlap), within [lo, hi]."""
    start = math.ceil(math.log10(thresh)) + 1
    decades = [10.0**e for e in range(start, math.floor(math.log10(max(hi, thresh))) + 1)]
    ticks = [0.0] + [d for d in decades if d <= hi] + [-d for d in decades if -d >= lo]
    ax.set_yticks(sorted(ticks))


def levels_figure(panels: Sequence[tuple[str, Sequence[float], Sequence[tuple[float, int]]]], title: str) -> plt.Figure:
    """Sorted eigenvalues (descending, symmetric-log axis) with predicted levels as dashed lines.

    ``panels``: (label, measured eigenvalues, [(predicted value, multiplicity), …]).
    """
    import numpy as np

    fig, axes = panel_grid(len(panels), width=5.6, height=4.0)
    for ax, (label, spectrum, levels) in zip(axes, panels):
        ev = np.sort(np.asarray(spectrum))[::-1]
        ax.plot(np.arange(1, ev.size + 1), ev, ".", ms=3, color="C0", label="measured")
        for i, (value, mult) in enumerate(sorted(levels, key=lambda x: -x[0])):
            ax.axhline(value, color=f"C{(i % 8) + 1}", ls="--", lw=0.9, label=f"theory {value:.4g} (×{mult})")
        predicted = [abs(v) for v, _ in levels if v != 0]
        thresh = min(predicted) / 10 if predicted else max(float(np.abs(ev).max()), 1e-300) * 1e-3
        ax.set_yscale("symlog", linthresh=thresh)  # linear within ±thresh: numerical zeros sit on 0
        top = max(predicted + [float(np.abs(ev).max())])
        low = float(ev.min()) if ev.size else 0.0
        bottom = 3 * low if low < -thresh else -2 * thresh  # negative decades only where there is data
        ax.set_ylim(bottom, 3 * top)
        _symlog_ticks(ax, thresh, bottom, 3 * top)
        ax.set(xscale="log", xlabel="index (descending)", ylabel="eigenvalue", title=label)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    return finish_grid(fig, axes, len(panels), title)


def density_figure(grid: Sequence[float], density: Sequence[float], top: Sequence[float], title: str) -> plt.Figure:
    """An SLQ spectral density (log y) with the top eigenvalues drawn as spikes."""
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    xs, ys = [], []
    for x, y in zip(grid, density):
        if y > 0:
            xs.append(x)
            ys.append(y)
    ax.plot(xs, ys, color="C0", label="SLQ density")
    for i, t in enumerate(top):
        ax.axvline(
            t,
            color="C3",
            lw=0.8,
            alpha=0.8,
            label=f"{len(top)} outlier{'' if len(top) == 1 else 's'} (Lanczos)" if i == 0 else None,
        )
    ax.set(yscale="log", xlabel="eigenvalue", ylabel="density", title=_two_lines(title))
    if ys:
        ax.set_ylim(max(ys) * 1e-8, max(ys) * 3)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def fidelity_figure(panels: Sequence[tuple[str, Sequence[Sequence[float]]]], title: str) -> plt.Figure:
    """Heat maps of f_cc' (K × K, rows c: output-side class, columns c': input-side class) on [0, 1]:
    1 where the class-mean pair is an eigenvector of the layer Hessian."""
    import numpy as np

    fig, axes = panel_grid(len(panels), width=3.8, height=3.4)
    image = None
    for ax, (label, f) in zip(axes, panels):
        image = ax.imshow(np.asarray(f), vmin=0.0, vmax=1.0, cmap="viridis")
        k = len(f)
        ax.set(title=label, xlabel="input class c'", ylabel="output class c")
        ticks = list(range(k)) if k <= 12 else list(range(0, k, max(1, k // 6)))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    if image is not None:
        fig.colorbar(image, ax=axes[: len(panels)], shrink=0.8, label="f_cc' (1: an eigenvector)")
    return finish_grid(fig, axes, len(panels), title)


def curves_figure(
    steps: Sequence[int], panels: Sequence[tuple[str, dict[str, Sequence[float | None]]]], title: str
) -> plt.Figure:
    """One panel per quantity, one line per series, against the training step (log x where the steps
    span decades)."""
    fig, axes = panel_grid(len(panels))
    log_x = len(steps) > 1 and min(steps) > 0 and max(steps) / max(min(steps), 1) >= 100
    for ax, (label, series) in zip(axes, panels):
        for name, ys in series.items():
            pts = [(s, y) for s, y in zip(steps, ys) if y is not None and math.isfinite(y)]
            if pts:
                ax.plot([s for s, _ in pts], [y for _, y in pts], "o-", ms=3, label=name)
        ax.set(xlabel="step", ylabel=label, xscale="log" if log_x else "linear")
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
    return finish_grid(fig, axes, len(panels), title)


FIGURES = {
    f.__name__: f
    for f in (
        loss_figure,
        metrics_figure,
        singular_values_figure,
        spectra_figure,
        levels_figure,
        density_figure,
        fidelity_figure,
        curves_figure,
    )
}
