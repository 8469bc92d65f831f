"""Does PGD-20's final FOSC flag the points where PGD-20 overestimates robustness?

    python -m fosc_jax.evaluation.convergence_study --models DIR [DIR ...] --data MNIST_DIR
        --num-examples N --out OUT [--autoattack-budget standard] [--bootstrap 2000]

Per model (an exported model folder or a run directory): on a seeded test subset, PGD-20
(eps/4, random start), then AutoAttack on the points PGD-20 left robust. A PGD-20-robust point
that AutoAttack breaks is "overestimated". How well each PGD-20 end-point score ranks the
overestimated points above those robust to both is the ROC AUC (Mann-Whitney), with a
stratified percentile bootstrap interval: the box-aware FOSC, the plain FOSC, the final CE
loss and the negative logit margin. Each model's per-example numbers go to OUT/MODEL.json
(a finished model is skipped on rerun); OUT/summary.json, OUT/summary.md and
OUT/fosc_histogram.png pool them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Mapping, Optional, Sequence

import numpy as np

SCORES = ("fosc_box", "fosc", "loss", "neg_margin")
TAU_QUANTILE = 0.9  # tau: median over models of this quantile of c_box (robust to both)
HISTOGRAM_COLUMNS = 4  # panels per row of fosc_histogram.png


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """P(score of a random positive > that of a random negative), ties counting 1/2.

    Computed from midranks (the Mann-Whitney U statistic over n1 * n0); None when a class
    is empty.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    # midranks: every run of equal scores gets the mean of its 1-based positions
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[labels].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, num_resamples: int = 2000,
                  seed: int = 0, level: float = 0.95) -> Optional[tuple[float, float]]:
    """Percentile bootstrap interval of :func:`roc_auc`, resampling positives and negatives
    separately (each resample keeps both classes); None when a class is empty."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        return None
    rng = np.random.default_rng(seed)
    aucs = np.empty(num_resamples)
    lab = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    for i in range(num_resamples):
        s = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        aucs[i] = roc_auc(s, lab)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(aucs, alpha)), float(np.quantile(aucs, 1.0 - alpha))


def bootstrap_auc_difference(a: np.ndarray, b: np.ndarray, labels: np.ndarray,
                             num_resamples: int = 2000, seed: int = 0, level: float = 0.95
                             ) -> Optional[dict]:
    """AUC(a) - AUC(b) of two scores of the same examples, with a paired stratified
    percentile bootstrap interval (the same resampled examples score both); None when a
    class is empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    labels = np.asarray(labels, bool)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if pos.size == 0 or neg.size == 0:
        return None
    rng = np.random.default_rng(seed)
    lab = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    diffs = np.empty(num_resamples)
    for i in range(num_resamples):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        diffs[i] = roc_auc(a[idx], lab) - roc_auc(b[idx], lab)
    alpha = (1.0 - level) / 2.0
    return dict(diff=roc_auc(a, labels) - roc_auc(b, labels),
                low=float(np.quantile(diffs, alpha)), high=float(np.quantile(diffs, 1 - alpha)))


def separation(per_example: Mapping, num_resamples: int = 2000, seed: int = 0) -> dict:
    """AUC and interval of each score in ``SCORES`` on the PGD-20-robust points."""
    surv = np.asarray(per_example["pgd20_robust"], bool)
    over = np.asarray(per_example["overestimated"], bool)[surv]
    out = {}
    for name in SCORES:
        s = np.asarray(per_example[name], np.float64)[surv]
        ci = bootstrap_auc(s, over, num_resamples, seed)
        out[name] = dict(auc=roc_auc(s, over), low=None if ci is None else ci[0],
                         high=None if ci is None else ci[1])
    fb = np.asarray(per_example["fosc_box"], np.float64)[surv]
    for name in ("loss", "neg_margin"):  # FOSC_box against each baseline, paired
        base = np.asarray(per_example[name], np.float64)[surv]
        out[f"fosc_box_minus_{name}"] = bootstrap_auc_difference(fb, base, over,
                                                                 num_resamples, seed)
    return out


def measure_model(model_dir: str, data_dir: str, num_examples: Optional[int], *,
                  eps: Optional[float] = None, budget: str = "standard", seed: int = 0,
                  data_seed: int = 0, batch_size: int = 128, progress: bool = False) -> dict:
    """PGD-20 then AutoAttack on one model; per-example arrays (lists) and timings."""
    from fosc_jax.autoattack.runner import run_autoattack
    from fosc_jax.config import config_get
    from fosc_jax.data import load_dataset
    from fosc_jax.data.subset import eval_subset_indices
    from fosc_jax.evaluation.suite import ATTACKS, Suite
    from fosc_jax.rundir.export import load_classifier

    clf = load_classifier(model_dir)
    eps = float(eps if eps is not None else config_get(clf.config, "attack.eps"))
    source = os.fspath(data_dir)   # a folder, or a source ("bundled", "files:DIR", "tfds")
    if source not in ("bundled", "tfds") and not source.startswith("files:"):
        source = "files:" + source
    ds = load_dataset(source, config_get(clf.config, "data.name"))
    idx = eval_subset_indices(len(ds.y_test), num_examples, data_seed)
    suite = Suite(clf, ds.x_test[idx], ds.y_test[idx], batch_size=batch_size, seed=seed,
                  progress=progress)
    t0 = time.perf_counter()
    clean = suite.predict() == suite.y
    pgd = suite.attack(ATTACKS["pgd20"], eps)
    survivors = clean & pgd["correct"]
    t1 = time.perf_counter()
    aa = run_autoattack(suite, ["autoattack"], eps, survivors, budget)
    aa_robust = aa["per_example"]["autoattack"]
    t2 = time.perf_counter()
    per_example = dict(index=idx, clean=clean, pgd20_robust=survivors,
                       overestimated=survivors & ~aa_robust, fosc_box=pgd["fosc_box"],
                       fosc=pgd["fosc"], loss=pgd["loss"], neg_margin=-pgd["margin"])
    return dict(model=os.path.basename(os.path.normpath(model_dir)), eps=eps,
                n=int(len(idx)), seed=seed, data_seed=data_seed, budget=budget,
                autoattack=aa["autoattack"], seconds=dict(pgd20=t1 - t0, autoattack=t2 - t1),
                per_example={k: np.asarray(v).tolist() for k, v in per_example.items()})


def robust_quantile(result: Mapping, quantile: float = TAU_QUANTILE) -> Optional[float]:
    """One model's ``quantile`` of c_box over its points robust to both attacks."""
    pe = result["per_example"]
    vals = np.asarray(pe["fosc_box"])[np.asarray(pe["pgd20_robust"], bool)
                                       & ~np.asarray(pe["overestimated"], bool)]
    return float(np.quantile(vals, quantile)) if vals.size else None


def choose_tau(results: Sequence[Mapping], quantile: float = TAU_QUANTILE) -> Optional[float]:
    """The median over models of each model's ``quantile`` of c_box over its points robust to
    both attacks (a median, so one model on another FOSC scale does not set it)."""
    per_model = [q for q in (robust_quantile(r, quantile) for r in results) if q is not None]
    return float(np.median(per_model)) if per_model else None


def summarise(results: Sequence[Mapping], num_resamples: int = 2000, seed: int = 0,
              tau: Optional[float] = None) -> dict:
    """Per model: counts, AUCs with intervals, and the flag rates at ``tau`` (default: the
    tau evaluate.py uses, ``convergence.TAU_CE``); ``rule_tau`` is what the calibration rule
    (:func:`choose_tau`) gives on these models."""
    from fosc_jax.evaluation.convergence import TAU_CE
    tau = TAU_CE if tau is None else tau
    rows = []
    for r in results:
        pe = r["per_example"]
        surv = np.asarray(pe["pgd20_robust"], bool)
        over = np.asarray(pe["overestimated"], bool)
        fb = np.asarray(pe["fosc_box"], np.float64)
        flagged = surv & (fb > tau) if tau is not None else np.zeros_like(surv)
        rows.append(dict(
            model=r["model"], n=r["n"], eps=r["eps"], budget=r["budget"],
            clean=int(np.sum(pe["clean"])), pgd20_robust=int(surv.sum()),
            overestimated=int(over.sum()), separation=separation(pe, num_resamples, seed),
            flagged=int(flagged.sum()),
            recall_at_tau=float((flagged & over).sum() / max(over.sum(), 1)),
            false_flag_rate=float((flagged & ~over).sum() / max((surv & ~over).sum(), 1)),
            robust_q90=robust_quantile(r), seconds=r["seconds"]))
    return dict(tau=tau, rule_tau=choose_tau(results), tau_quantile=TAU_QUANTILE,
                num_resamples=num_resamples, models=rows)


def markdown(summary: Mapping) -> str:
    """The summary as a Markdown table."""
    lines = ["| model | n | PGD-20 robust | overestimated | AUC FOSC_box | AUC FOSC | "
             "AUC loss | AUC -margin | FOSC_box - loss | FOSC_box - margin | "
             f"flagged > tau {summary['tau']:g} (recall / false-flag rate) |",
             "|" + "---|" * 11]

    def cell(s, key="auc"):
        if s is None or s[key] is None:
            return "-"
        return f"{s[key]:.2f} [{s['low']:.2f}, {s['high']:.2f}]"
    for m in summary["models"]:
        sep = m["separation"]
        diffs = [cell(sep.get(f"fosc_box_minus_{k}"), "diff") for k in ("loss", "neg_margin")]
        lines.append(f"| {m['model']} | {m['n']} | {m['pgd20_robust']} | {m['overestimated']} "
                     f"| " + " | ".join([cell(sep[k]) for k in SCORES] + diffs)
                     + f" | {m['flagged']} ({m['recall_at_tau']:.2f} / "
                       f"{m['false_flag_rate']:.2f}) |")
    tau, rule = summary["tau"], summary.get("rule_tau")
    lines += ["", overview(summary)]
    lines += ["", f"AUC: how well each PGD-20 end-point score ranks the overestimated points "
                  f"(PGD-20-robust, broken by AutoAttack) above those robust to both; "
                  f"[95% stratified percentile bootstrap, {summary['num_resamples']} "
                  f"resamples; the differences are paired]. tau = {tau:g}, the one evaluate.py uses; "
                  f"the calibration rule (the {summary['tau_quantile']:g} quantile of FOSC_box "
                  f"over each model's points robust to both, median over the models) gives "
                  f"{'-' if rule is None else f'{rule:.3g}'} on these models."]
    return "\n".join(lines) + "\n"


def overview(summary: Mapping) -> str:
    """The table in words: on how many models FOSC_box ranks below each baseline, on how many
    the paired interval excludes 0 (each way), and the spread of the per-model quantile that
    sets tau."""
    models = summary["models"]
    parts = []
    for key, label in (("loss", "the loss"), ("neg_margin", "the margin")):
        diffs = [m["separation"].get(f"fosc_box_minus_{key}") for m in models]
        diffs = [d for d in diffs if d is not None and d.get("diff") is not None]
        below = sum(d["diff"] < 0 for d in diffs)
        sure_below = sum(d["high"] < 0 for d in diffs)
        sure_above = sum(d["low"] > 0 for d in diffs)
        parts.append(f"below {label} on {below} of {len(diffs)} models (interval below 0 on "
                     f"{sure_below}, above 0 on {sure_above})")
    qs = [m["robust_q90"] for m in models if m.get("robust_q90") is not None]
    spread = (f" The {summary['tau_quantile']:g} quantile of FOSC_box over each model's points "
              f"robust to both ranges from {min(qs):.3g} to {max(qs):.3g}." if qs else "")
    return "FOSC_box's AUC is " + "; ".join(parts) + "." + spread


def histogram(results: Sequence[Mapping], path: str, tau: Optional[float]) -> None:
    """FOSC_box histograms of the two groups, one panel per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fosc_jax.rundir.integrity import atomic_write

    cols = min(len(results), HISTOGRAM_COLUMNS)
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    for ax, r in zip(axes.flat, results):
        pe = r["per_example"]
        surv = np.asarray(pe["pgd20_robust"], bool)
        over = np.asarray(pe["overestimated"], bool)
        fb = np.asarray(pe["fosc_box"], np.float64)
        top = max(float(fb[surv].max(initial=0.0)), 1e-6)
        bins = np.linspace(0.0, top, 25)
        ax.hist(fb[surv & ~over], bins=bins, alpha=0.6, density=True,
                label=f"robust to both ({int((surv & ~over).sum())})")
        ax.hist(fb[over], bins=bins, alpha=0.6, density=True,
                label=f"PGD-20 overestimated ({int(over.sum())})")
        if tau is not None:
            ax.axvline(tau, color="k", ls="--", lw=1, label=f"tau {tau:.3g}")
        ax.set_title(f"{r['model']} (eps {r['eps']:g}, n={r['n']})")
        ax.set_xlabel("final FOSC_box of PGD-20")
        ax.legend(fontsize=7)
    for row in axes:
        row[0].set_ylabel("density")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    plt.close(fig)


def run(models: Sequence[str], data_dir: str, out: str, num_examples: Optional[int], *,
        num_resamples: int = 2000, **kwargs) -> dict:
    """Measure each model (skipping one whose OUT/MODEL.json has the same settings), then
    write summary.json, summary.md and fosc_histogram.png."""
    from fosc_jax.rundir.integrity import atomic_write_json, atomic_write_text
    os.makedirs(out, exist_ok=True)
    results = []
    for model_dir in models:
        name = os.path.basename(os.path.normpath(model_dir))
        path = os.path.join(out, f"{name}.json")
        want = dict(n_requested=num_examples, budget=kwargs.get("budget", "standard"),
                    seed=kwargs.get("seed", 0), data_seed=kwargs.get("data_seed", 0))
        if os.path.exists(path):
            with open(path) as f:
                done = json.load(f)
            if done.get("settings") == want:
                print(f"{name}: done earlier, read from {path}", flush=True)
                results.append(done)
                continue
        result = measure_model(model_dir, data_dir, num_examples, **kwargs)
        result["settings"] = want
        atomic_write_json(path, result)
        print(f"{name}: PGD-20 {result['seconds']['pgd20']:.0f} s, AutoAttack "
              f"{result['seconds']['autoattack']:.0f} s", flush=True)
        results.append(result)
    summary = summarise(results, num_resamples)
    atomic_write_json(os.path.join(out, "summary.json"), summary)
    atomic_write_text(os.path.join(out, "summary.md"), markdown(summary))
    histogram(results, os.path.join(out, "fosc_histogram.png"), summary["tau"])
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="model or run directories")
    p.add_argument("--data", default=os.environ.get("FOSC_JAX_MNIST_DIR"),
                   help="test data folder (default: $FOSC_JAX_MNIST_DIR)")
    p.add_argument("--num-examples", type=int, default=None, help="seeded test subset size")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--eps", type=float, default=None, help="default: the model's attack.eps")
    p.add_argument("--autoattack-budget", default="standard", choices=["standard", "cpu"])
    p.add_argument("--seed", type=int, default=0, help="attack random starts")
    p.add_argument("--data-seed", type=int, default=0, help="test subset choice")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--progress", action="store_true")
    return p


def validate(args: argparse.Namespace) -> None:
    """Every flag checked before any compute; a UsageError names the flag and the fix."""
    from fosc_jax.errors import UsageError
    if not args.data:
        raise UsageError("--data: give the test data folder (or bundled), or set "
                         "FOSC_JAX_MNIST_DIR.")
    folder = args.data[len("files:"):] if args.data.startswith("files:") else args.data
    if args.data not in ("bundled", "tfds") and not os.path.isdir(folder):
        raise UsageError(f"--data: no folder {args.data!r}; give the folder of the test data "
                         "files, bundled or tfds.")
    missing = [m for m in args.models if not os.path.isdir(m)]
    if missing:
        raise UsageError(f"--models: no such folder: {', '.join(missing)}; give exported "
                         "model folders or run directories.")
    for flag, value, low in (("--num-examples", args.num_examples, 1),
                             ("--batch-size", args.batch_size, 1),
                             ("--bootstrap", args.bootstrap, 100)):
        if value is not None and value < low:
            raise UsageError(f"{flag}: must be >= {low}, got {value}.")
    if args.eps is not None and not 0 < args.eps <= 1:
        raise UsageError(f"--eps: must be in (0, 1] for inputs in [0, 1], got {args.eps}.")


def main(argv: Optional[Sequence[str]] = None) -> dict:
    from fosc_jax.errors import cli_guard
    return cli_guard(_main)(argv)


def _main(argv: Optional[Sequence[str]]) -> dict:
    args = build_parser().parse_args(argv)
    validate(args)
    import jax

    from fosc_jax import cpu_malloc
    cpu_malloc.keep_freed_memory_on_cpu(jax.default_backend())
    summary = run(args.models, args.data, args.out, args.num_examples,
                  num_resamples=args.bootstrap, eps=args.eps, budget=args.autoattack_budget,
                  seed=args.seed, data_seed=args.data_seed, batch_size=args.batch_size,
                  progress=args.progress)
    print(markdown(summary), end="")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
