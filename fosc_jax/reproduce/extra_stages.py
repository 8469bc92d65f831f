"""The scoring stages beyond the white-box and black-box tables: AutoAttack on every
defense model (both experiments), and FOSC as an evaluation diagnostic (MNIST only,
docs/fosc_evaluation.md); ``Experiment.stages`` says which experiment has which.

Both skip models already scored, as the other stages do (:mod:`fosc_jax.reproduce.pipeline`).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from fosc_jax import rundir
from fosc_jax.reproduce.pipeline import model_dir, never, score_each, test_subset
from fosc_jax.reproduce.plan import Run, Scale
from fosc_jax.reproduce.provenance import record_run


def autoattack_all(runs: Sequence[Run], scale: Scale, ds, out: str, log=print,
                   progress: bool = False, stop=never) -> dict:
    """AutoAttack (the standard cascade; the cpu budget at the cpu scale, labelled as not the
    standard version) on the first ``scale.autoattack_images`` images of the evaluation
    subset, for every defense model; one JSON per model in out/eval/autoattack."""
    from fosc_jax.evaluation.api import evaluate_classifier

    x, y, _ = test_subset(ds, scale.autoattack_pool)
    x, y = x[:scale.autoattack_images], y[:scale.autoattack_images]

    def score(run: Run, folder: str) -> dict:
        rec = evaluate_classifier(rundir.load_classifier(folder), x, y, attacks=("autoattack",),
                                  batch_size=500, seed=0, honesty=False, progress=progress,
                                  autoattack_budget=scale.autoattack_budget)
        return dict(rec, run=run.name)

    return score_each(
        [r for r in runs if r.role == "defense" and r.study == "table"], out,
        lambda run: os.path.join(out, "eval", "autoattack", f"{run.name}.json"), score,
        lambda rec: (f"{rec['white_box']['autoattack']['accuracy']:.4f} on {len(y)} images, "
                     f"{scale.autoattack_budget} budget"),
        tag="autoattack", stage="autoattack", log=log, stop=stop)


def convergence_all(runs: Sequence[Run], scale: Scale, source: str, out: str, log=print,
                    stop=never) -> Optional[dict]:
    """Does PGD-20's final FOSC tell where AutoAttack finds more? The measurement of
    :mod:`fosc_jax.evaluation.convergence_study` on every exported defense model (Unsecured
    has no robust point), into OUT/eval/convergence (finished models are skipped)."""
    from fosc_jax.evaluation import convergence_study

    measured = [r for r in runs if r.role == "defense" and r.study == "table"
                and r.defense != "unsecured" and rundir.export_complete(model_dir(out, r))]
    if not measured or stop():
        return None
    folder = os.path.join(out, "eval", "convergence")
    for run in measured:   # provenance for the models this call measures, not those it skips
        if not os.path.exists(os.path.join(folder, f"{run.name}.json")):
            record_run(out, run.name, "convergence")
    models = [model_dir(out, r) for r in measured]
    summary = convergence_study.run(models, source, folder,
                                    scale.convergence_images, budget=scale.convergence_budget,
                                    batch_size=250)
    log(f"[convergence] {len(models)} models, n={scale.convergence_images or 10000}, "
        f"tau {summary['tau']}")
    return summary
