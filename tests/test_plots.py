"""Figures a reader can trust: grids at most three wide, outliers counted on the bulk's bins
(nothing drawn for numerical zeros), symlog tick labels that do not collide, rank jumps of NC1
marked, long titles on two lines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastdnc import plots


@pytest.mark.parametrize(
    "n, shape", [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)), (8, (3, 3)), (9, (3, 3))]
)
def test_panel_grids_are_at_most_three_wide_and_hide_blank_cells(n, shape):
    fig, axes = plots.panel_grid(n)
    assert len(axes) == shape[0] * shape[1]
    fig = plots.finish_grid(fig, axes, n, "t")
    assert [ax.get_visible() for ax in axes] == [True] * n + [False] * (len(axes) - n)
    plots.plt.close(fig)


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _bars(ax, color: str) -> list[float]:
    """Heights of the histogram bars of ``color`` (matplotlib's C-name) that hold eigenvalues."""
    from matplotlib.colors import to_rgb

    return [p.get_height() for p in ax.patches if to_rgb(p.get_facecolor()) == to_rgb(color) and p.get_height()]


def test_outliers_are_counted_on_the_bulks_bins_and_numerical_zeros_left_out():
    rng = np.random.default_rng(0)
    bulk = list(rng.uniform(1e-3, 1e-2, 30))
    with_bulk = [5.0, 4.0] + bulk
    collapsed = [3.0, 2.0, 1.0] + [1e-17] * 13 + [0.0] * 20  # 3 nonzero of K² = 16, no bulk
    equal = [0.5] * 16 + [1e-20] * 4  # sixteen equal outliers: one bar of 16
    fig = plots.spectra_figure(
        [with_bulk, collapsed, equal], ["a", "b", "c"], [2, 16, 16], "t", spike_label="{n} outliers"
    )
    a, b, c = fig.axes[:3]
    assert sum(_bars(a, "C3")) == 2 and sum(_bars(a, "C0")) == 30 and "2 outliers" in _legend(a)
    assert a.get_ylabel() == "count" and all(float(t).is_integer() for t in a.get_yticks())
    assert sum(_bars(b, "C3")) == 3 and _legend(b) == ["16 outliers (3 nonzero)"] and not _bars(b, "C0")
    assert any("no bulk: the other 33 eigenvalues" in t.get_text() for t in b.texts)
    assert _bars(c, "C3") == [16] and b.get_ylabel() == "count"
    lo, hi = c.get_xlim()
    assert lo >= 0.5 / 10 and hi <= 0.5 * 10  # the data's range, not decades around it
    plots.plt.close(fig)


def test_a_lanczos_panel_says_how_much_of_the_spectrum_was_computed():
    fig = plots.spectra_figure([[3.0, 1e-2, 2e-2, 3e-2]], ["W_1"], 1, "t", spike_label="{n} outlier{s}", sizes=[500])
    assert _legend(fig.axes[0]) == ["the rest of the top 4 (3); 496 not computed", "1 outlier"]
    plots.plt.close(fig)


def test_symlog_ticks_keep_a_decade_from_the_linear_band():
    fig = plots.levels_figure(
        [("p", [0.7, 0.01, 0.005, 1e-14, -1e-14], [(0.7, 1), (0.01, 1), (0.005, 1), (0, 2)])], "t"
    )
    ax = fig.axes[0]
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert 0.0 in ticks and all(t >= 0 for t in ticks)  # no data below −thresh: no negative decades
    nonzero = sorted(abs(t) for t in ticks if t)
    assert nonzero[0] >= 10 * 0.005 / 10 and all(math.log10(b / a) >= 1 - 1e-9 for a, b in zip(nonzero, nonzero[1:]))
    plots.plt.close(fig)


@pytest.mark.parametrize("workers", [0, 1], ids=["here", "background"])
def test_figure_writer_draws_here_or_in_a_worker_and_reports_errors(tmp_path, workers):
    with plots.FigureWriter(workers) as writer:
        assert writer.background is (workers > 0)
        name = writer.draw(tmp_path / "s.png", "spectra_figure", [[2.0, 1.0, 0.1]], ["a"], 1, "t")
        with pytest.raises(ValueError, match="unknown figure 'save'"):
            writer.draw(tmp_path / "x.png", "save", None, tmp_path / "y.png")
    assert name == "s.png" and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TypeError), plots.FigureWriter(workers) as writer:  # a drawing error surfaces
        writer.draw(tmp_path / "bad.png", "spectra_figure", [[1.0]], ["a"], 1)  # title missing
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "x.png").exists()


def test_a_drop_in_the_rank_of_sigma_b_is_marked_on_nc1_and_fractions_keep_their_zeros():
    from fastdnc.training.history import History

    h = History()
    for step, (nc1, rank, frac) in enumerate([(0.5, 3, 0.4), (0.3, 3, 0.1), (1e-30, 2, 0.0), (1e-31, 2, 0.0)], 1):
        h.append(step, {"nc1/l1": nc1, "nc1_rank/l1": rank, "negative_fraction/l1": frac})
    fig = plots.metrics_figure(h, [("nc1", "NC1"), ("negative_fraction", "fraction", "linear")], 1, "t", note="n")
    nc1, frac = fig.axes[:2]
    marks = [ln for ln in nc1.lines if ln.get_marker() == "v" and len(ln.get_xdata())]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [3]  # the step where the rank fell
    assert "rank of Σ_B drops (a jump, not collapse)" in _legend(nc1)
    assert frac.get_yscale() == "linear" and list(frac.lines[0].get_ydata()) == [0.4, 0.1, 0.0, 0.0]
    assert fig.get_supxlabel() == "n"
    plots.plt.close(fig)


def test_long_single_panel_titles_go_on_two_lines():
    fig = plots.singular_values_figure(
        [[3.0, 1.0]], None, "deep linear UFM (CE, K=4, L=4, d=12): singular values of the weights"
    )
    assert fig.axes[0].get_title() == "deep linear UFM (CE, K=4, L=4, d=12):\nsingular values of the weights"
    plots.plt.close(fig)
