"""Figures from saved runs (the library behind ``python -m fosc_jax.reporting``).

Draws, when the data exists (PNG, matplotlib Agg), and writes DIR/index.md with a caption per
figure:

- fig1a_RUN.png / fig1b_RUN.png (Figure 1): PGD-10 test adversarial examples in 20 FOSC bins
  over [0, 0.1] (accuracy, mean loss), and FOSC / loss against the PGD step for 20 random
  examples. Needs the run's checkpoint and test data; the attack runs here.
- fosc_density.png (Figures 3/5): Gaussian KDE, reflected at 0 (FOSC >= 0), of the training
  adversarial examples' FOSC (RUN/fosc/epoch_XXXX.npz) at chosen epochs: a panel per epoch,
  each with its own tight x range, runs overlaid on its common axes.
- eps_sweep.png (Figure 4a): PGD-10 accuracy against test eps (RUN/eval/results.json,
  written by ``evaluate.py --eps-sweep``), each run's training eps marked.

- training_curves.png: c_t, attack steps, FOSC, clean / adversarial accuracy and loss per
  epoch (RUN/metrics.jsonl).

Epochs are numbered from 1, as train.py prints them. DIR defaults to RUN/report (one run) or
a report_A_B folder beside the first run.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from fosc_jax.reporting import figures
# The run files the figures read (also used as ``report.X`` by fosc_jax.reproduce).
from fosc_jax.rundir.metrics import fosc_epochs, load_fosc_sample, read_metrics


# ----------------------------------------------------------------------------- numerics


def reflected_kde(samples: Any, grid: Any) -> np.ndarray:
    """Density of non-negative 1-D ``samples`` (FOSC) at ``grid``: scipy's Gaussian KDE
    (Scott's bandwidth) reflected at 0, so no mass leaks below 0 and the density at 0 is not
    halved; 0 for grid points below 0. Non-finite samples are dropped, negatives (float
    round-off) clipped to 0; identical samples get a bandwidth of 1e-3 of their scale."""
    from scipy import stats

    x = np.asarray(samples, np.float64).ravel()
    x = np.clip(x[np.isfinite(x)], 0.0, None)
    grid = np.asarray(grid, np.float64)
    if x.size == 0:
        raise ValueError("reflected_kde needs at least one finite sample.")
    if x.size > 1 and np.ptp(x) > 0:
        kde = stats.gaussian_kde(x)
    else:  # scipy cannot estimate a bandwidth from one value
        h = 1e-3 * max(1.0, float(x.max()))
        kde = stats.gaussian_kde(np.array([x[0] - h, x[0] + h]), bw_method=1.0)
    density = kde(grid) + kde(-grid)
    return np.where(grid >= 0, density, 0.0)


def fosc_bins(fosc: Any, correct: Any, loss: Any, num_bins: int = 20, lo: float = 0.0,
              hi: float = 0.1) -> dict:
    """Split examples into ``num_bins`` equal FOSC bins over [lo, hi] (Figure 1a).

    Bins are [e_i, e_{i+1}), the last one closed. Returns edges, centers, count, accuracy
    and mean_loss per bin (NaN for empty bins) and ``outside``: examples beyond [lo, hi].
    """
    fosc, correct, loss = (np.asarray(a).ravel() for a in (fosc, correct, loss))
    if not (fosc.shape == correct.shape == loss.shape):
        raise ValueError(f"fosc, correct and loss must have equal lengths, got "
                         f"{fosc.shape}, {correct.shape}, {loss.shape}.")
    if num_bins < 1 or not hi > lo:
        raise ValueError(f"need num_bins >= 1 and hi > lo, got {num_bins}, [{lo}, {hi}].")
    edges = np.linspace(lo, hi, num_bins + 1)
    inside = (fosc >= lo) & (fosc <= hi)
    idx = np.minimum(np.searchsorted(edges, fosc[inside], side="right") - 1, num_bins - 1)
    count = np.bincount(idx, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, correct[inside].astype(float), num_bins) / count
        mean_loss = np.bincount(idx, loss[inside].astype(float), num_bins) / count
    return dict(edges=edges, centers=0.5 * (edges[1:] + edges[:-1]), count=count,
                accuracy=np.where(count > 0, acc, np.nan),
                mean_loss=np.where(count > 0, mean_loss, np.nan),
                outside=int((~inside).sum()))


# ----------------------------------------------------------------------------- run files


def _check_run(run: str) -> str:
    if not os.path.isdir(run):
        from fosc_jax.errors import RunFileError
        raise RunFileError(f"run directory {run!r} does not exist.")
    return run


def read_eps_sweep(run: str) -> list[tuple[float, float]]:
    """(eps, PGD-10 accuracy) points from RUN/eval/results.json (the sweep, plus the
    evaluation eps itself); [] when the run was not evaluated."""
    from fosc_jax.evaluation.tables import read_results
    if not os.path.exists(os.path.join(_check_run(run), "eval", "results.json")):
        return []
    points: dict[float, float] = {}
    for rec in read_results(run):
        for p in rec.get("eps_sweep") or []:
            points[float(p["eps"])] = float(p["accuracy"])
        if "pgd10" in (rec.get("white_box") or {}) and points:
            points.setdefault(float(rec["eps"]), float(rec["white_box"]["pgd10"]["accuracy"]))
    return sorted(points.items())


def training_eps(run: str) -> Optional[float]:
    """The run's training eps (RUN/config.json attack.eps), or None without a config."""
    import json
    path = os.path.join(run, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return float(json.load(f)["attack"]["eps"])


def default_out(runs: Sequence[str]) -> str:
    """RUN/report for one run; for several, report_A_B beside the first run."""
    if len(runs) == 1:
        return os.path.join(runs[0], "report")
    parent = os.path.dirname(os.path.normpath(runs[0]))
    return os.path.join(parent, "report_" + "_".join(
        os.path.basename(os.path.normpath(r)) for r in runs))


def run_names(runs: Sequence[str]) -> list[str]:
    """Legend names: the run folders' base names (full paths where those clash)."""
    base = [os.path.basename(os.path.normpath(r)) for r in runs]
    return [b if base.count(b) == 1 else os.path.normpath(r) for b, r in zip(base, runs)]


def pick_epochs(available: Sequence[int], wanted: Optional[Sequence[int]] = None,
                count: int = 3) -> list[int]:
    """``wanted`` (each must be available), else ``count`` evenly spaced available epochs."""
    available = sorted(set(available))
    if wanted:
        missing = sorted(set(wanted) - set(available))
        if missing:
            raise ValueError(f"no FOSC samples for epochs {missing}; available: {available}.")
        return sorted(set(wanted))
    if len(available) <= count:
        return available
    picks = np.linspace(0, len(available) - 1, count).round().astype(int)
    return sorted({available[i] for i in picks})


# ----------------------------------------------------------------------------- Figure 1 data


def fosc_accuracy_data(classifier: Any, x: Any, y: Any, *, eps: float,
                       step_fraction: float = 0.25, batch_size: int = 256, seed: int = 0,
                       progress: bool = True) -> dict[str, np.ndarray]:
    """Per-example FOSC, cross-entropy loss and correctness of PGD-10 test examples."""
    from fosc_jax.evaluation.suite import Suite, attack_spec
    suite = Suite(classifier, x, y, batch_size=batch_size, seed=seed, progress=progress)
    out = suite.attack(attack_spec("pgd10", step_fraction), eps)
    return dict(fosc=out["fosc"], loss=out["loss"], correct=out["correct"])


def fosc_trace_data(classifier: Any, x: Any, y: Any, *, eps: float,
                    step_fraction: float = 0.25, num_steps: int = 10, num_examples: int = 20,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """FOSC and loss after each PGD step [num_steps + 1, m] for m random examples."""
    import jax

    from fosc_jax.attacks import pgd
    from fosc_jax.data.pipeline import unit_float
    from fosc_jax.data.subset import eval_subset_indices
    from fosc_jax.evaluation.suite import check_inputs

    x, y = check_inputs(x, y)
    idx = eval_subset_indices(len(y), num_examples, seed)
    xb = unit_float(x[idx])

    @jax.jit
    def run(variables, xb, yb, key):
        res = pgd(lambda z: classifier.apply(variables, z), xb, yb, key, eps=eps,
                  step_size=eps * step_fraction, num_steps=num_steps, record_trace=True)
        return res.fosc_trace, res.loss_trace

    f, l = run(classifier.variables, xb, y[idx], jax.random.key(seed))
    return dict(fosc_trace=np.asarray(f), loss_trace=np.asarray(l), indices=idx)


# ----------------------------------------------------------------------------- the report


def _figure1(run: str, name: str, out: str, num_examples: Optional[int], seed: int,
             progress: bool, fosc_max: float,
             data: Optional[str] = None) -> list[tuple[str, str]]:
    from fosc_jax.rundir.export import load_classifier
    from fosc_jax.data import load_dataset
    from fosc_jax.data.sources import resolve_source
    from fosc_jax.config import config_get
    from fosc_jax.data.subset import eval_subset_indices

    clf = load_classifier(run)
    cfg = clf.config
    source, data_dir = resolve_source(cfg.data.source, cfg.data.name,
                                      config_get(cfg, "data.data_dir"), data)
    ds = load_dataset(source, cfg.data.name, data_dir=data_dir)
    idx = eval_subset_indices(len(ds.y_test), num_examples, seed)
    x, y, eps = ds.x_test[idx], ds.y_test[idx], float(cfg.attack.eps)
    data = fosc_accuracy_data(clf, x, y, eps=eps, seed=seed, progress=progress,
                              batch_size=int(config_get(cfg, "eval.batch_size", 256)))
    bins = fosc_bins(data["fosc"], data["correct"], data["loss"], hi=fosc_max)
    note = ""
    if bins["outside"] > len(y) / 2:  # the paper's range misses most examples: widen it
        hi = float(np.nanpercentile(data["fosc"], 99))
        if hi > 0:
            note = (f" (over half the examples exceed FOSC {fosc_max:g}, so the range is "
                    f"widened to the 99th percentile {hi:.3g})")
            bins = fosc_bins(data["fosc"], data["correct"], data["loss"], hi=hi)
    a = figures.plot_fosc_bins(bins, os.path.join(out, f"fig1a_{name}.png"),
                               title=f"{name}: PGD-10 test examples (eps={eps:.4g})",
                               note=note.strip(" ()"))
    tr = fosc_trace_data(clf, x, y, eps=eps, seed=seed)
    b = figures.plot_fosc_traces(tr["fosc_trace"], tr["loss_trace"],
                                 os.path.join(out, f"fig1b_{name}.png"), title=name)
    hi = bins["edges"][-1]
    return [(a, f"Figure 1a ({name}): {len(y)} PGD-10 test examples (eps={eps:.4g}, epoch "
                f"{clf.epoch}) in 20 FOSC bins over [0, {hi:.3g}]{note}: accuracy (bars, the "
                f"count of examples above each) and mean loss (line); {bins['outside']} "
                f"examples fall outside the range."),
            (b, f"Figure 1b ({name}): FOSC and loss against the PGD step for "
                f"{len(tr['indices'])} random test examples.")]


def make_report(runs: Sequence[str], out: str, *, epochs: Optional[Sequence[int]] = None,
                attack_figures: bool = True, num_examples: Optional[int] = None,
                seed: int = 0, progress: bool = True, fosc_max: float = 0.1,
                data: Optional[str] = None) -> dict[str, str]:
    """Draw every figure the runs have data for into ``out``; write ``out/index.md``.

    Figure 1a bins FOSC over [0, ``fosc_max``] (the paper's 0.1); when more than half the
    examples lie above it, the range is widened to their 99th percentile (said in the caption).

    ``data`` says where Figure 1's test data is (as evaluate.py --data; see
    ``fosc_jax.data.sources.resolve_source``).

    Returns {png path: caption}. Figures without data are listed in index.md as skipped.
    """
    if not runs:
        raise ValueError("give at least one run directory.")
    for r in runs:
        _check_run(r)
    os.makedirs(out, exist_ok=True)
    names = run_names(runs)
    made: dict[str, str] = {}
    skipped: list[str] = []

    if attack_figures:
        for run, name in zip(runs, names):
            try:
                for path, caption in _figure1(run, name, out, num_examples, seed, progress,
                                              fosc_max, data):
                    made[path] = caption
            except (FileNotFoundError, ValueError, KeyError) as err:
                skipped.append(f"Figure 1 ({name}): {err}")

    samples = {name: fosc_epochs(run) for run, name in zip(runs, names)}
    available = sorted(set().union(*samples.values()))
    if available:
        chosen = pick_epochs(available, epochs)
        fosc = {(name, e): load_fosc_sample(run, e)["fosc"] for run, name in zip(runs, names)
                for e in chosen if e in samples[name]}
        fosc = {k: v[np.isfinite(v)] for k, v in fosc.items() if np.isfinite(v).any()}
        curves = {}
        for e in chosen:
            here = [fosc[(name, e)] for name in names if (name, e) in fosc]
            if not here:
                continue
            hi = float(np.percentile(np.concatenate(here), 99))  # a tight range per epoch
            grid = np.linspace(0.0, max(1.05 * hi, 1e-6), 400)
            curves[e] = {name: (grid, reflected_kde(fosc[(name, e)], grid)) for name in names
                         if (name, e) in fosc}
        path = figures.plot_densities(curves, os.path.join(out, "fosc_density.png"),
                                      title="FOSC of training adversarial examples")
        made[path] = (f"Figures 3/5: density of the FOSC of training adversarial examples at "
                      f"epochs {sorted(curves)} (Gaussian KDE, Scott bandwidth, reflected at 0 "
                      f"since FOSC >= 0), runs overlaid; each panel spans 0 to the epoch's "
                      f"99th percentile.")
    else:
        skipped.append("FOSC densities: no RUN/fosc/epoch_XXXX.npz files.")

    sweeps = {name: read_eps_sweep(run) for run, name in zip(runs, names)}
    sweeps = {k: v for k, v in sweeps.items() if v}
    if sweeps:
        train_eps = {name: eps for run, name in zip(runs, names)
                     if name in sweeps and (eps := training_eps(run)) is not None}
        path = figures.plot_eps_sweep(sweeps, os.path.join(out, "eps_sweep.png"), train_eps)
        made[path] = ("Figure 4a: PGD-10 accuracy against the test eps (evaluate.py "
                      "--eps-sweep); dotted vertical lines mark each run's training eps.")
    else:
        skipped.append("eps sweep: no RUN/eval/results.json with an eps sweep "
                       "(python evaluate.py --workdir RUN --eps-sweep 2/255,4/255,6/255,8/255).")

    metrics = {name: read_metrics(run) for run, name in zip(runs, names)}
    metrics = {k: v for k, v in metrics.items() if v}
    if metrics:
        path = figures.plot_training_curves(metrics, os.path.join(out, "training_curves.png"))
        made[path] = ("Training curves: c_t, mean attack steps, FOSC (mean, median, 90th "
                      "percentile), clean and adversarial accuracy (train and test subset) and "
                      "training loss per epoch.")
    else:
        skipped.append("training curves: no RUN/metrics.jsonl.")

    _write_index(out, runs, made, skipped)
    return made


def _write_index(out: str, runs: Sequence[str], made: Mapping[str, str],
                 skipped: Sequence[str]) -> str:
    lines = ["# Report", "", "Runs: " + ", ".join(f"`{r}`" for r in runs), ""]
    for path, caption in made.items():
        rel = os.path.relpath(path, out)
        lines += [f"![{rel}]({rel})", "", caption, ""]
    if skipped:
        lines += ["## Not drawn", ""] + [f"- {s}" for s in skipped] + [""]
    path = os.path.join(out, "index.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
