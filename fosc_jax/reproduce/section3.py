"""The paper's Section 3 on MNIST: convergence of the inner maximisation against robustness.

Figure 2: Standard AT with PGD-20 at step sizes eps, eps/2, eps/4, eps/8, and with step eps/6
and 10, 20, 30, 40 steps; each model is cross-tested against every PGD setting of its sweep,
and the FOSC and loss densities of its last epoch's training adversarial examples are drawn.
Figure 3: PGD-10 against FGSM-then-PGD (FGSM for the first 40% of epochs): FOSC densities at
an early, middle and late epoch, and final robustness. The claim (does the last epoch's FOSC
predict final PGD-20 robustness better than the loss does?) is tested on every run with
FOSC samples; see :func:`claim_rows`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from fosc_jax.reproduce import pipeline, stats
from fosc_jax.reproduce.plan import Run, Scale

EVAL_DIR = ("eval", "section3")
# FOSC mass below this counts as "converged" in the claim's features (the paper's Figure 2
# shows the better models' FOSC concentrated in [0, 0.1]).
CONVERGED = 0.1


def cross_specs(run: Run) -> dict:
    """The PGD settings a Section 3 model is tested against: its sweep's, plus PGD-20 eps/4
    (the paper's evaluation, shared by every run for the claim)."""
    from fosc_jax.evaluation.suite import ATTACKS, AttackSpec

    specs = {"pgd20": ATTACKS["pgd20"]}
    if run.sweep == "step_size":
        for d in (1, 2, 8):   # eps/4 is the shared PGD-20
            specs[f"pgd20_eps{d}"] = AttackSpec(f"pgd20_eps{d}", f"PGD-20, step eps/{d}",
                                                num_steps=20, step_fraction=1.0 / d)
    elif run.sweep == "num_steps":
        for k in (10, 20, 30, 40):
            name = f"pgd{k}_eps6"
            specs[name] = AttackSpec(name, f"PGD-{k}, step eps/6", num_steps=k,
                                     step_fraction=1.0 / 6)
    else:
        specs["pgd10"] = ATTACKS["pgd10"]
    return specs


def eval_path(out: str, run: Run) -> str:
    return os.path.join(out, *EVAL_DIR, f"{run.name}.json")


def evaluate_section3(runs: Sequence[Run], scale: Scale, ds, out: str, log=print,
                      progress: bool = False, stop=lambda: False) -> dict:
    """Cross-test every exported Section 3 model on the first ``scale.s3_test_images`` of a
    seeded test subset; one JSON per model in OUT/eval/section3 (finished ones skipped)."""
    from fosc_jax import rundir
    from fosc_jax.evaluation.suite import Suite, accuracy_entry

    x, y, _ = pipeline.test_subset(ds, scale.s3_test_images)

    def score(run: Run, folder: str) -> dict:
        clf = rundir.load_classifier(folder)
        eps = float(clf.config.attack.eps)
        suite = Suite(clf, x, y, batch_size=500, seed=0, progress=progress)
        rec = dict(run=run.name, sweep=run.sweep, eps=eps, n=int(len(y)),
                   clean=accuracy_entry(suite.predict() == y), attacks={})
        for name, spec in cross_specs(run).items():
            rec["attacks"][name] = dict(spec.settings(eps),
                                        **accuracy_entry(suite.attack(spec, eps)["correct"]))
        return rec

    return pipeline.score_each(
        [r for r in runs if r.study == "section3"], out, lambda run: eval_path(out, run), score,
        lambda rec: f"clean {rec['clean']['accuracy']:.4f} " + " ".join(
            f"{k} {v['accuracy']:.4f}" for k, v in rec["attacks"].items()) + f" on {len(y)} images",
        tag="section3", stage="eval", log=log, stop=stop)


# ----------------------------------------------------------------------------- the claim


def last_epoch_sample(out: str, run: Run) -> Optional[dict]:
    """FOSC and loss of the last epoch's training adversarial examples (None if absent)."""
    from fosc_jax.rundir.metrics import fosc_epochs, load_fosc_sample
    wd = pipeline.run_dir(out, run)
    epochs = fosc_epochs(wd) if os.path.isdir(os.path.join(wd, "fosc")) else []
    return load_fosc_sample(wd, epochs[-1]) if epochs else None


@dataclasses.dataclass(frozen=True)
class ClaimPoint:
    """One run in the claim's correlation: its last-epoch features and final PGD-20."""
    run: str
    study: str
    fosc_mean: float
    fosc_converged: float    # share of FOSC values <= CONVERGED
    loss_mean: float
    pgd20: float             # final PGD-20 accuracy (%), eps/4 step
    n_test: int


def claim_points(runs: Sequence[Run], out: str, table: Mapping[str, dict],
                 section3: Mapping[str, dict]) -> list[ClaimPoint]:
    """Every run with an attack during training, FOSC samples and a final PGD-20 number.

    Unsecured (no training attack) and the collapsed no-remedy demo (a constant model whose
    gradients are zero, so its FOSC is 0 by construction) are left out."""
    points = []
    for run in runs:
        if run.defense == "unsecured" or run.role == "demo":
            continue
        if run.study == "section3":
            rec = section3.get(run.name)
            acc = None if rec is None else rec["attacks"]["pgd20"]
            n = None if rec is None else rec["n"]
        else:
            rec = table.get(run.name)
            acc = None if rec is None else rec["white_box"]["pgd20"]
            n = None if rec is None else rec["clean"]["n"]
        sample = last_epoch_sample(out, run)
        if acc is None or sample is None:
            continue
        fosc = sample["fosc"][np.isfinite(sample["fosc"])]
        points.append(ClaimPoint(run.name, run.study, float(fosc.mean()),
                                 float(np.mean(fosc <= CONVERGED)),
                                 float(np.mean(sample["loss"])), 100.0 * acc["accuracy"], n))
    return points


def bootstrap_rank_advantage(a: Sequence[float], b: Sequence[float], y: Sequence[float], *,
                             reps: int = 4000, seed: int = 0,
                             level: float = 0.95) -> stats.Interval:
    """|rho(a, y)| - |rho(b, y)| with a percentile bootstrap over the paired points."""
    from scipy import stats as sps
    a, b, y = (np.asarray(v, float) for v in (a, b, y))
    rho = lambda u, v: abs(sps.spearmanr(u, v).statistic)  # noqa: E731
    rng = np.random.default_rng(seed)
    draws = []
    if np.ptp(y) == 0:
        raise ValueError("y is constant: rank correlations are undefined.")
    for _ in range(reps):
        i = rng.integers(0, len(y), len(y))
        if np.ptp(y[i]) == 0 or np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0:
            continue
        draws.append(rho(a[i], y[i]) - rho(b[i], y[i]))
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return stats.Interval(rho(a, y) - rho(b, y), float(lo), float(hi), level,
                          f"percentile bootstrap over runs, {len(draws)} resamples")


def rank_advantage(points: Sequence[ClaimPoint]) -> Optional[stats.Interval]:
    """|rho(FOSC mean, PGD-20)| - |rho(loss mean, PGD-20)| over the runs with its bootstrap
    interval; None with fewer than 4 runs or one PGD-20 value for all."""
    y = [p.pgd20 for p in points]
    if len(points) < 4 or np.ptp(y) == 0:
        return None
    return bootstrap_rank_advantage([p.fosc_mean for p in points],
                                    [p.loss_mean for p in points], y)


def claim_rows(points: Sequence[ClaimPoint], adv: Optional[stats.Interval] = None
               ) -> tuple[list[str], Optional[str]]:
    """Markdown rows of the rank correlations with PGD-20 and the plain answer (``adv``:
    :func:`rank_advantage` of ``points`` when the caller has it already)."""
    if len(points) < 4:
        return [f"(needs >= 4 runs with FOSC samples and PGD-20; have {len(points)})"], None
    y = [p.pgd20 for p in points]
    if np.ptp(y) == 0:
        return [f"(final PGD-20 is {y[0]:.2f}% for all {len(y)} runs: nothing to rank)"], None
    feats = {"FOSC mean": [p.fosc_mean for p in points],
             f"FOSC share <= {CONVERGED}": [p.fosc_converged for p in points],
             "loss mean": [p.loss_mean for p in points]}
    lines = ["| last-epoch feature | Spearman rho with final PGD-20 | p | n runs |",
             "|---|---|---|---|"]
    for name, v in feats.items():
        if np.ptp(v) == 0:
            lines.append(f"| {name} | undefined: {v[0]:.3g} for every run | - | {len(v)} |")
            continue
        r = stats.spearman(v, y)
        lines.append(f"| {name} | {r.rho:+.2f} | {r.p_value:.3g} | {r.n} |")
    adv = adv if adv is not None else rank_advantage(points)
    better = stats.verdict(adv, null=0.0, above="yes: FOSC ranks the runs better",
                           below="no: the loss ranks the runs better",
                           n=f"{len(points)} runs")
    answer = (f"|rho(FOSC mean)| - |rho(loss mean)| = {adv.estimate:+.2f} "
              f"[{adv.low:+.2f}, {adv.high:+.2f}] (95%, {adv.method}): {better}.")
    return lines, answer


# ----------------------------------------------------------------------------- figures


def draw_section3(runs: Sequence[Run], out: str, records: Mapping[str, dict],
                  log=print) -> dict[str, str]:
    """Figure 2 and 3 analogs in OUT/figures; returns {file: caption} for what was drawn."""
    from fosc_jax.reporting import figures
    from fosc_jax.reporting.report import reflected_kde
    from fosc_jax.rundir.metrics import fosc_epochs, load_fosc_sample
    import matplotlib.pyplot as plt

    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    made = {}
    sweeps = {"step_size": [r for r in runs if r.sweep == "step_size"],
              "num_steps": [r for r in runs if r.sweep == "num_steps"]}
    done = {k: [r for r in v if r.name in records] for k, v in sweeps.items()}
    if any(done.values()):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, (sweep, rs) in zip(axes, done.items()):
            for j, r in enumerate(rs):
                atts = [(k, v) for k, v in records[r.name]["attacks"].items()
                        if k != "pgd20" or sweep == "step_size"]
                if sweep == "step_size":
                    atts.sort(key=lambda kv: -kv[1]["step_size"])
                ax.plot(range(len(atts)), [100 * v["accuracy"] for _, v in atts], "o-",
                        color=f"C{j}", label=_train_label(r))
                ax.set_xticks(range(len(atts)), [v["label"].replace(", ", "\n") for _, v in atts],
                              fontsize="small")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title("trained with PGD-20 at step sizes" if sweep == "step_size"
                         else "trained with step eps/6 and K steps")
            _legend(ax)
        made["fig2_cross_test.png"] = ("Figure 2 analog: each Section 3 model (a line, by its "
                                       "training attack) against the PGD settings of its sweep.")
        figures._save(fig, os.path.join(fig_dir, "fig2_cross_test.png"))

        fig, axes = plt.subplots(2, 2, figsize=(11, 7))
        for col, (sweep, rs) in enumerate(sweeps.items()):
            samples = {r.name: last_epoch_sample(out, r) for r in rs}
            samples = {k: v for k, v in samples.items() if v is not None}
            for row, key in enumerate(("fosc", "loss")):
                ax = axes[row, col]
                vals = np.concatenate([s[key] for s in samples.values()]) if samples else [1.0]
                grid = np.linspace(0.0, max(float(np.percentile(vals, 99)), 1e-3), 300)
                for j, r in enumerate(rs):
                    if r.name in samples:
                        v = samples[r.name][key]
                        ax.plot(grid, reflected_kde(np.maximum(v[np.isfinite(v)], 0), grid),
                                color=f"C{j}", label=_train_label(r))
                ax.set_xlabel(f"{'FOSC' if key == 'fosc' else 'cross-entropy loss'} of the last "
                              "epoch's training adversarial examples")
                ax.set_ylabel("density")
                _legend(ax)
        made["fig2_densities.png"] = ("Figure 2 analog: densities (reflected KDE) of FOSC (top) "
                                      "and loss (bottom) of the last epoch's training "
                                      "adversarial examples; left: step-size sweep, right: "
                                      "step-count sweep.")
        figures._save(fig, os.path.join(fig_dir, "fig2_densities.png"))

    pair = [r for r in runs if r.sweep == "fgsm"]
    avail = {r.name: fosc_epochs(pipeline.run_dir(out, r)) for r in pair
             if os.path.isdir(os.path.join(pipeline.run_dir(out, r), "fosc"))}
    if len(avail) == 2 and all(avail.values()):
        common = sorted(set.intersection(*(set(v) for v in avail.values())))
        if common:
            picks = sorted({common[0], common[len(common) // 2], common[-1]})
            fig, axes = plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.6))
            axes = np.atleast_1d(axes)
            for ax, epoch in zip(axes, picks):
                data = {r.name: load_fosc_sample(pipeline.run_dir(out, r), epoch)["fosc"]
                        for r in pair}
                hi = max(float(np.percentile(np.concatenate(list(data.values())), 99)), 1e-3)
                grid = np.linspace(0.0, hi, 300)
                for j, r in enumerate(pair):
                    v = data[r.name]
                    ax.plot(grid, reflected_kde(np.maximum(v[np.isfinite(v)], 0), grid),
                            color=f"C{j}", label=_train_label(r))
                ax.set_title(f"epoch {epoch}")
                ax.set_xlabel("FOSC")
                _legend(ax)
            made["fig3_fgsm_then_pgd.png"] = (
                "Figure 3 analog: FOSC densities of the training adversarial examples of PGD-10 "
                "and FGSM-then-PGD at an early, a middle and the last epoch.")
            figures._save(fig, os.path.join(fig_dir, "fig3_fgsm_then_pgd.png"))
    log(f"[section3] {len(made)} figures")
    return made


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _train_label(run: Run) -> str:
    if run.defense == "fgsm_pgd":
        return "FGSM-then-PGD"
    steps = run.steps or 10
    frac = run.step_fraction or 0.25
    return f"PGD-{steps}, step eps/{round(1 / frac)}"


def section3_lines(runs: Sequence[Run], scale: Scale, out: str,
                   records: Mapping[str, dict]) -> list[str]:
    """RESULTS.md rows: each Section 3 model's training attack, last FOSC/loss, test results."""
    lines = ["| run | training attack | last-epoch FOSC mean | FOSC share <= 0.1 | "
             "loss mean | clean | test attacks (accuracy %) | n |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        if run.study != "section3" or run.name not in records:
            continue
        rec, sample = records[run.name], last_epoch_sample(out, run)
        f = sample["fosc"] if sample is not None else np.array([np.nan])
        atts = ", ".join(f"{v['label']} {100 * v['accuracy']:.2f}"
                         for v in rec["attacks"].values())
        lines.append(f"| {run.name} | {_train_label(run)} | {np.nanmean(f):.3f} | "
                     f"{np.mean(f <= CONVERGED):.2f} | "
                     f"{np.mean(sample['loss']) if sample is not None else float('nan'):.3f} | "
                     f"{100 * rec['clean']['accuracy']:.2f} | {atts} | {rec['n']} |")
    return lines
