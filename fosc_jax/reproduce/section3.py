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


# Groups of runs trained at one scale: ranks are compared only within a group.
GROUP_LABELS = {"table": "Table 1 runs", "section3": "Section 3 runs"}


def bootstrap_rank_advantage(a: Sequence[float], b: Sequence[float], y: Sequence[float],
                             groups: Optional[Sequence] = None, *, reps: int = 4000,
                             seed: int = 0, level: float = 0.95) -> stats.Interval:
    """|rho(a, y)| - |rho(b, y)| with a percentile bootstrap over the paired points; with
    ``groups``, both rhos are :func:`stats.stratified_spearman` and the bootstrap resamples
    within each group."""
    a, b, y = (np.asarray(v, float) for v in (a, b, y))
    if np.ptp(y) == 0:
        raise ValueError("y is constant: rank correlations are undefined.")
    g = np.zeros(len(y), int) if groups is None else np.asarray(groups)
    rho = lambda u, i: abs(stats.stratified_spearman(u[i], y[i], g[i]))  # noqa: E731
    return stats.stratified_bootstrap(lambda i: rho(a, i) - rho(b, i), g, reps=reps,
                                      seed=seed, level=level)


def rank_advantage(points: Sequence[ClaimPoint], stratified: bool = True
                   ) -> Optional[stats.Interval]:
    """|rho(FOSC mean, PGD-20)| - |rho(loss mean, PGD-20)| over the runs with its bootstrap
    interval, ranks within each study (``stratified``) or over all runs pooled; None with
    fewer than 4 runs or one PGD-20 value for all."""
    y = [p.pgd20 for p in points]
    if len(points) < 4 or np.ptp(y) == 0:
        return None
    return bootstrap_rank_advantage([p.fosc_mean for p in points],
                                    [p.loss_mean for p in points], y,
                                    [p.study for p in points] if stratified else None)


def _studies(points: Sequence[ClaimPoint]) -> list[str]:
    """The studies of ``points``, the known ones first in GROUP_LABELS order."""
    present = {p.study for p in points}
    return [s for s in GROUP_LABELS if s in present] + sorted(present - set(GROUP_LABELS))


def runs_label(points: Sequence[ClaimPoint]) -> str:
    """How many runs, per study when there are several: "12 + 10 runs" or "22 runs"."""
    return " + ".join(str(sum(p.study == s for p in points)) for s in _studies(points)) \
        + " runs"


def _features(points: Sequence[ClaimPoint]) -> dict:
    return {"FOSC mean": np.array([p.fosc_mean for p in points]),
            f"FOSC share <= {CONVERGED}": np.array([p.fosc_converged for p in points]),
            "loss mean": np.array([p.loss_mean for p in points])}


def feature_rho(points: Sequence[ClaimPoint], name: str, *, reps: int = 4000
                ) -> stats.Interval:
    """A feature's within-study rank correlation with PGD-20 and its stratified bootstrap."""
    x, y = _features(points)[name], np.array([p.pgd20 for p in points])
    g = np.array([p.study for p in points])
    return stats.stratified_bootstrap(lambda i: stats.stratified_spearman(x[i], y[i], g[i]),
                                      g, reps=reps)


def claim_rows(points: Sequence[ClaimPoint], adv: Optional[stats.Interval] = None
               ) -> tuple[list[str], Optional[str]]:
    """Markdown rows of the rank correlations with PGD-20 (within each study, within studies
    pooled, and across all runs) and the plain answer. ``adv``: :func:`rank_advantage` of
    ``points`` when the caller has it already."""
    if len(points) < 4:
        return [f"(needs >= 4 runs with FOSC samples and PGD-20; have {len(points)})"], None
    y = np.array([p.pgd20 for p in points])
    if np.ptp(y) == 0:
        return [f"(final PGD-20 is {y[0]:.2f}% for all {len(y)} runs: nothing to rank)"], None
    g = np.array([p.study for p in points])
    studies = _studies(points)
    several = len(studies) > 1
    intervals = {}    # each feature's stratified bootstrap, once for the table and the answer
    head = ["last-epoch feature"] + [
        f"rho within {GROUP_LABELS.get(s, s)} (n = {np.sum(g == s)})" for s in studies
        if several] + ["rho within studies [95% CI]" if several else "Spearman rho [95% CI]",
                       f"rho, all {len(y)} runs pooled (p)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in _features(points).items():
        if all(np.ptp(v[g == s]) == 0 for s in studies):
            lines.append(f"| {name} | undefined: constant within every study |"
                         + " - |" * (len(head) - 2))
            continue
        cells = []
        for s in (studies if several else []):
            m = g == s
            cells.append("-" if np.ptp(v[m]) == 0 or np.ptp(y[m]) == 0 or m.sum() < 3
                         else f"{stats.spearman(v[m], y[m]).rho:+.2f}")
        r = intervals[name] = feature_rho(points, name)
        pooled = stats.spearman(v, y) if np.ptp(v) > 0 else None
        cells += [f"{r.estimate:+.2f} [{r.low:+.2f}, {r.high:+.2f}]",
                  "-" if pooled is None else f"{pooled.rho:+.2f} ({pooled.p_value:.3g})"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    adv = adv if adv is not None else rank_advantage(points)
    n = runs_label(points)
    better = stats.verdict(adv, null=0.0, above="yes: FOSC ranks the runs better",
                           below="no: the loss ranks the runs better", n=n)
    answer = (f"|rho(FOSC mean)| - |rho(loss mean)| = {adv.estimate:+.2f} "
              f"[{adv.low:+.2f}, {adv.high:+.2f}] (95%, {adv.method}): {better}.")
    fosc = intervals.get("FOSC mean") or feature_rho(points, "FOSC mean")
    answer += (" The paper's direction, lower final FOSC for the more robust model, is a "
               f"negative rho; FOSC mean's is {fosc.estimate:+.2f} [{fosc.low:+.2f}, "
               f"{fosc.high:+.2f}]: " + stats.verdict(
                   fosc, null=0.0, above="the opposite direction", below="the paper's "
                   "direction", n=n) + ".")
    if several:
        pooled = rank_advantage(points, stratified=False)
        answer += (" Pooling all runs as one group instead gives "
                   f"{pooled.estimate:+.2f} [{pooled.low:+.2f}, {pooled.high:+.2f}], but "
                   "that mostly compares the studies (different training scales, so "
                   "different levels of loss and of robustness), which is why the verdict "
                   "ranks runs only within their study.")
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
