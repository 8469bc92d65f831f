"""The reproduction's table figures: Figure 1 (FOSC bins and traces of seed-0 models), the
FOSC densities during training, Figure 4a's eps sweep, training curves and the collapse."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from fosc_jax import rundir
from fosc_jax.reporting import figures
from fosc_jax.reproduce import pipeline
from fosc_jax.reproduce.plan import Run, Scale


def plot_density_overlay(samples: Mapping[str, Mapping[int, np.ndarray]], path: str) -> str:
    """FOSC densities of several runs at a few epochs on one axis (colour: run, style: epoch)."""
    import matplotlib.pyplot as plt

    from fosc_jax.reporting.report import reflected_kde
    values = np.concatenate([v for per in samples.values() for v in per.values()])
    hi = float(np.percentile(values, 99)) if values.size else 1.0
    grid = np.linspace(0.0, max(hi, 1e-3), 400)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = (":", "--", "-")
    for j, (run, per) in enumerate(samples.items()):
        for i, (epoch, v) in enumerate(sorted(per.items())):
            v = v[np.isfinite(v)]
            ax.plot(grid, reflected_kde(np.maximum(v, 0.0), grid), styles[i % 3],
                    color=f"C{j}", label=f"{run}, epoch {epoch}")
    ax.set_xlabel("FOSC of the training adversarial examples")
    ax.set_ylabel("density")
    ax.set_xlim(0, grid[-1])
    ax.set_title("FOSC density during training (Figures 3/5 of the paper)")
    ax.legend(fontsize="small")
    return figures._save(fig, path)


def first_runs(runs: Sequence[Run], defenses: Sequence[str]) -> dict[str, Run]:
    """{run name: run}: the first defense run (in ``runs`` order) of each of ``defenses``,
    in the order of ``defenses`` (the seed-0 runs the figures draw)."""
    found = {}
    for defense in defenses:
        run = next((r for r in runs if r.defense == defense and r.role == "defense"), None)
        if run is not None:
            found[run.name] = run
    return found


def draw_figures(runs: Sequence[Run], scale: Scale, ds, out: str, records: Mapping,
                 log=print) -> dict[str, str]:
    """Every figure of the reproduction into OUT/figures; returns {file name: caption}."""
    from fosc_jax.reporting import report as rep
    fig_dir = os.path.join(out, "figures")
    made: dict[str, str] = {}
    by_name = {r.name: r for r in runs}
    exp = pipeline.experiment_of(runs)
    x, y, _ = pipeline.test_subset(ds, scale.figure_images, seed=2)
    for name, run in first_runs(runs, ("dynamic", "standard")).items():
        if not os.path.exists(os.path.join(pipeline.model_dir(out, run), rundir.EXPORT_FILE)):
            continue
        clf = rundir.load_classifier(pipeline.model_dir(out, run))
        eps = float(clf.config.attack.eps)
        data = rep.fosc_accuracy_data(clf, x, y, eps=eps, batch_size=exp.eval_batch,
                                      progress=False)
        hi = 0.1
        bins = rep.fosc_bins(data["fosc"], data["correct"], data["loss"], hi=hi)
        note = ""
        if bins["outside"] > len(y) / 2:
            hi = float(np.nanpercentile(data["fosc"], 99))
            bins = rep.fosc_bins(data["fosc"], data["correct"], data["loss"], hi=hi)
            note = f" Range widened from the paper's [0, 0.1] to [0, {hi:.3g}] (99th percentile)."
        f = f"fig1a_{name}.png"
        figures.plot_fosc_bins(bins, os.path.join(fig_dir, f),
                               title=f"{name}: PGD-10 test examples, n={len(y)}, bins over "
                                     f"[0, {hi:.3g}]")
        made[f] = (f"Figure 1a ({name}): accuracy and mean loss of {len(y)} PGD-10 test "
                   f"examples (eps {figures.eps_labels([eps])[0]}) in 20 FOSC bins; {bins['outside']} fall outside."
                   + note)
        tr = rep.fosc_trace_data(clf, x, y, eps=eps)
        f = f"fig1b_{name}.png"
        figures.plot_fosc_traces(tr["fosc_trace"], tr["loss_trace"], os.path.join(fig_dir, f),
                                 title=f"{name}: 20 random test examples, PGD-10")
        made[f] = f"Figure 1b ({name}): FOSC and loss against the PGD step, 20 test examples."

    dens = {}
    for name, run in first_runs(runs, ("standard", "dynamic")).items():
        wd = pipeline.run_dir(out, run)
        epochs = rep.fosc_epochs(wd) if os.path.isdir(wd) else []
        if epochs:
            pick = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
            dens[name] = {e: rep.load_fosc_sample(wd, e)["fosc"] for e in pick}
    if dens:
        f = "fosc_density.png"
        plot_density_overlay(dens, os.path.join(fig_dir, f))
        made[f] = ("FOSC densities of the training adversarial examples, Standard and Dynamic "
                   "overlaid (first, middle and last epoch; KDE reflected at 0).")

    sweeps = {name: [(p["eps"], p["accuracy"]) for p in rec.get("eps_sweep", [])]
              for name, rec in records.items() if by_name[name].role == "defense"}
    if any(sweeps.values()):
        f = "eps_sweep.png"
        figures.plot_eps_sweep(sweeps, os.path.join(fig_dir, f))
        n = next(iter(records.values())).get("eps_sweep_n")
        made[f] = (f"Figure 4a: PGD-10 accuracy against the test eps (trained at "
                   f"{exp.eps_label}), n={n}.")

    started = [r for r in runs if pipeline.epochs_done(pipeline.run_dir(out, r))]
    seed0 = first_runs(started, ("unsecured", "standard", "dynamic", "curriculum"))
    curves = {r.name: rep.read_metrics(pipeline.run_dir(out, r)) for r in started
              if r.name in seed0}
    f = "training_curves.png"
    figures.plot_training_curves(curves, os.path.join(fig_dir, f))
    made[f] = ("Training curves of the seed-0 runs (per-epoch test numbers on a "
               f"{scale.eval_per_epoch}-image subset).")
    demo = [r for r in started if r.role == "demo"]
    standard = first_runs(runs, ("standard",))
    if demo and standard:
        rows = rep.read_metrics(pipeline.run_dir(out, demo[0]))
        std = rep.read_metrics(pipeline.run_dir(out, *standard.values()))
        f = "collapse.png"
        figures.plot_training_curves({"attack BN train mode (no remedy)": rows,
                                      "attack BN inference mode (remedy)": std[:len(rows)]},
                                     os.path.join(fig_dir, f))
        made[f] = ("The eps 0.3 collapse: Standard AT with train-mode BatchNorm in the attack "
                   "against the remedy, same seed and data, first epochs.")
    log(f"[report] {len(made)} figures in {fig_dir}")
    return made
