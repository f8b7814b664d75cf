"""Figures a reader can trust: no blank grid cells, spikes only where there are eigenvalues, no
empty histograms, symlog tick labels that do not collide."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastdnc import plots


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 8, 9])
def test_panel_grids_leave_no_blank_cell(n):
    fig, axes = plots._panel_grid(n)
    assert len(axes) == n
    plots.plt.close(fig)


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_spikes_follow_the_per_panel_counts_and_skip_numerical_zeros():
    rng = np.random.default_rng(0)
    bulk = list(rng.uniform(1e-3, 1e-2, 30))
    with_bulk = [5.0, 4.0] + bulk
    collapsed = [3.0, 2.0, 1.0] + [1e-17] * 13 + [0.0] * 20  # 3 nonzero of K² = 16, no bulk
    fig = plots.spectra_figure([with_bulk, collapsed], ["a", "b"], [2, 16], "t", spike_label="{n} outliers")
    a, b = fig.axes
    assert len([ln for ln in a.lines if ln.get_color() == "C3"]) == 2 and "2 outliers" in _legend(a)
    assert a.patches and a.get_ylabel() == "count"
    assert all(float(t).is_integer() for t in a.get_yticks())  # counts are whole numbers
    assert len(b.lines) == 3 and _legend(b) == ["16 outliers (3 nonzero)"]
    assert not b.patches and list(b.get_yticks()) == [] and b.get_ylabel() == ""  # no empty histogram axis
    assert any("no bulk: the other 33 eigenvalues" in t.get_text() for t in b.texts)
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
