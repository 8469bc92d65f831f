"""Matplotlib (Agg) drawings of the paper's figures; data preparation lives in report.py.

Each function takes plain numpy data, writes one PNG and returns its path.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 120


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_fosc_bins(bins: Mapping, path: str, title: str = "", note: str = "") -> str:
    """Figure 1a: accuracy (bars, the example count written above each) and mean loss (line)
    of adversarial examples per FOSC bin; ``note`` (e.g. a widened range) is printed on it."""
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    centers, width = bins["centers"], np.diff(bins["edges"])
    acc = np.nan_to_num(100.0 * bins["accuracy"], nan=0.0)
    bars = ax.bar(centers, acc, width=0.9 * width, color="tab:blue", alpha=0.6,
                  label="accuracy")
    ax.bar_label(bars, labels=[f"n={int(c)}" if c else "" for c in bins["count"]],
                 fontsize=6, rotation=90, padding=2)
    ax.set_xlabel("FOSC of the PGD-10 adversarial example")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 115)
    if note:
        ax.text(0.01, 0.99, note, transform=ax.transAxes, ha="left", va="top", fontsize=7,
                wrap=True, bbox=dict(facecolor="lightyellow", edgecolor="grey", alpha=0.9))
    ax2 = ax.twinx()
    ax2.plot(centers, bins["mean_loss"], "o-", color="tab:red", label="mean loss")
    ax2.set_ylabel("mean cross-entropy loss")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, ["accuracy", "mean loss"], loc="upper right")
    ax.set_title(title or "Accuracy and loss per FOSC bin")
    return _save(fig, path)


def plot_fosc_traces(fosc_trace: np.ndarray, loss_trace: np.ndarray, path: str,
                     title: str = "") -> str:
    """Figure 1b: FOSC and loss of individual examples against the PGD step."""
    steps = np.arange(fosc_trace.shape[0])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(steps, fosc_trace, lw=1, alpha=0.8)
    a.set_xlabel("PGD step")
    a.set_ylabel("FOSC")
    a.set_title("FOSC per example")
    b.plot(steps, loss_trace, lw=1, alpha=0.8)
    b.set_xlabel("PGD step")
    b.set_ylabel("cross-entropy loss")
    b.set_title("loss per example")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_densities(curves: Mapping[int, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                   path: str, xlabel: str = "FOSC", title: str = "") -> str:
    """Figures 3/5: one panel per (1-based) epoch, each with its own x range (the grid it is
    given), the runs overlaid in the same colour in every panel: {epoch: {run: (x, p)}}."""
    epochs = sorted(curves)
    runs = list(dict.fromkeys(r for e in epochs for r in curves[e]))
    fig, axes = plt.subplots(1, len(epochs), figsize=(4.5 * len(epochs), 3.8), squeeze=False)
    for ax, epoch in zip(axes[0], epochs):
        for run, (grid, density) in curves[epoch].items():
            ax.plot(grid, density, label=run, color=f"C{runs.index(run) % 10}")
            ax.fill_between(grid, density, alpha=0.15, color=f"C{runs.index(run) % 10}")
            ax.set_xlim(float(grid[0]), float(grid[-1]))
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.set_title(f"epoch {epoch}")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def eps_labels(values: Sequence[float]) -> list[str]:
    """Tick labels in one style: k/255 when every value is a multiple of 1/255 (up to 64),
    else decimals for all."""
    ks = [v * 255 for v in values]
    if all(abs(k - round(k)) < 1e-3 and 0 < k <= 64 for k in ks):
        return [f"{round(k)}/255" for k in ks]
    return [f"{v:.3g}" for v in values]


def plot_eps_sweep(sweeps: Mapping[str, Sequence[tuple[float, float]]], path: str,
                   train_eps: Mapping[str, float] | None = None) -> str:
    """Figure 4a: PGD-10 accuracy against the test eps, one line per run; a dotted vertical
    line in the run's colour marks its training eps (``train_eps``: {run: eps})."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ticks: set = set()
    for j, (run, points) in enumerate(sweeps.items()):
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [100.0 * p[1] for p in pts], "o-", label=run,
                color=f"C{j % 10}")
        ticks.update(p[0] for p in pts)
        if train_eps and run in train_eps:
            ax.axvline(train_eps[run], color=f"C{j % 10}", ls=":", lw=1.5,
                       label=f"{run}: training eps {eps_labels([train_eps[run]])[0]}")
    ticks_sorted = sorted(ticks)
    if len(ticks_sorted) <= 10:
        ax.set_xticks(ticks_sorted, eps_labels(ticks_sorted))
    else:
        ax.set_xticks(ticks_sorted[::-(-len(ticks_sorted) // 8)],
                      eps_labels(ticks_sorted[::-(-len(ticks_sorted) // 8)]))
    ax.minorticks_off()
    ax.set_xlabel("test eps")
    ax.set_ylabel("PGD-10 accuracy (%)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("Robustness against PGD-10 by eps")
    return _save(fig, path)


CURVE_PANELS = (
    ("c_t", ["c_t"], "FOSC threshold c_t"),
    ("attack steps", ["attack_steps_mean"], "mean PGD steps per example"),
    ("FOSC", ["fosc_mean", "fosc_p50", "fosc_p90"], "FOSC of training adv. examples"),
    ("clean accuracy", ["train_clean_acc", "test_clean_acc"], "accuracy"),
    ("adversarial accuracy", ["train_adv_acc", "test_pgd10_acc"], "accuracy"),
    ("training loss", ["train_loss"], "loss"),
)


def plot_training_curves(metrics: Mapping[str, Sequence[Mapping]], path: str) -> str:
    """Per-epoch training curves (metrics.jsonl rows): a panel per quantity, a colour per run
    and a line style per series."""
    cols = 3
    rows = math.ceil(len(CURVE_PANELS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    styles = {0: "-", 1: "--", 2: ":"}
    for ax, (title, keys, ylabel) in zip(axes.flat, CURVE_PANELS):
        drawn = False
        for j, (run, rows_) in enumerate(metrics.items()):
            epochs = np.array([r["epoch"] for r in rows_])
            for i, key in enumerate(keys):
                vals = np.array([np.nan if r.get(key) is None else r[key] for r in rows_], float)
                if np.all(np.isnan(vals)):
                    continue
                label = run if len(keys) == 1 else f"{run}: {key}"
                ax.plot(epochs, vals, styles.get(i, "-"), color=f"C{j % 10}", marker=".",
                        label=label)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if drawn:
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "not used by these runs", ha="center", va="center",
                    transform=ax.transAxes)
    for ax in list(axes.flat)[len(CURVE_PANELS):]:
        ax.axis("off")
    return _save(fig, path)


__all__ = ["eps_labels", "plot_fosc_bins", "plot_fosc_traces", "plot_densities", "plot_eps_sweep",
           "plot_training_curves", "CURVE_PANELS"]
