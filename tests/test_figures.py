"""The report's figures read as the paper's: tight FOSC panels with 1-based epochs, runs on
common axes, Figure 1a's counts and widened-range note, one eps tick style with the
training eps marked."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fosc_jax.reporting import figures, report
from test_report import _fake_run


@pytest.fixture
def captured(monkeypatch):
    """The matplotlib figures the plot functions would save, kept open for inspection."""
    figs = []

    def keep(fig, path):
        figs.append(fig)
        return path
    monkeypatch.setattr(figures, "_save", keep)
    return figs


def test_density_panels_are_tight_1_based_and_overlaid(tmp_path, monkeypatch):
    a = _fake_run(tmp_path, "dyn", "dynamic")
    b = _fake_run(tmp_path, "std", "standard")
    seen = {}
    real = figures.plot_densities
    monkeypatch.setattr(figures, "plot_densities",
                        lambda curves, path, **kw: seen.update(curves) or real(curves, path, **kw))
    report.make_report([a, b], str(tmp_path / "out"), epochs=[1, 6], attack_figures=False)
    assert sorted(seen) == [1, 6]  # the console's numbering: files epoch_0001 .. epoch_0006
    for epoch, per_run in seen.items():
        pooled = np.concatenate([np.load(os.path.join(r, "fosc", f"epoch_{epoch:04d}.npz"))["fosc"]
                                 for r in (a, b)])
        assert set(per_run) == {"dyn", "std"}
        for grid, dens in per_run.values():
            assert grid[0] == 0.0 and grid[-1] == pytest.approx(1.05 * np.percentile(pooled, 99))
            assert np.all(dens >= 0)
    # epoch 6's values are ~6x smaller than epoch 1's: so is its panel
    assert seen[6]["dyn"][0][-1] < 0.4 * seen[1]["dyn"][0][-1]


def test_density_figure_axes(captured):
    grid1, grid2 = np.linspace(0, 1.0, 50), np.linspace(0, 0.1, 50)
    figures.plot_densities({1: {"a": (grid1, grid1), "b": (grid1, 1 - grid1)},
                            7: {"a": (grid2, grid2), "b": (grid2, grid2)}}, "unused.png")
    ax1, ax7 = captured[0].axes
    assert ax1.get_title() == "epoch 1" and ax7.get_title() == "epoch 7"
    assert ax1.get_xlim() == (0.0, 1.0) and ax7.get_xlim() == (0.0, 0.1)
    colours = [[line.get_color() for line in ax.lines] for ax in (ax1, ax7)]
    assert colours[0] == colours[1] and len(set(colours[0])) == 2  # a run keeps its colour


def test_figure1a_shows_counts_and_the_widened_range(captured):
    rng = np.random.default_rng(0)
    fosc = rng.uniform(0, 0.5, 200)
    bins = report.fosc_bins(fosc, rng.random(200) > 0.5, rng.random(200), hi=0.5)
    note = "range widened to the 99th percentile 0.5"
    figures.plot_fosc_bins(bins, "unused.png", note=note)
    ax = captured[0].axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert note in texts
    counts, _ = np.histogram(fosc, np.linspace(0, 0.5, 21))
    assert [t for t in texts if t.startswith("n=")] == [f"n={c}" for c in counts if c]


def test_eps_sweep_one_tick_style_and_training_eps(captured):
    assert figures.eps_labels([2 / 255, 8 / 255]) == ["2/255", "8/255"]
    assert figures.eps_labels([0.02, 8 / 255, 0.3]) == ["0.02", "0.0314", "0.3"]
    figures.plot_eps_sweep({"r": [(0.05, 0.9), (0.1, 0.7), (0.3, 0.1)]}, "unused.png",
                           train_eps={"r": 0.1})
    ax = captured[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.05", "0.1", "0.3"]
    vertical = [line for line in ax.lines if len(set(line.get_xdata())) == 1]
    assert [line.get_xdata()[0] for line in vertical] == [0.1]
