"""The reproduction's stages: train every run, export the final models, evaluate them.

Every stage skips what is already done (a finished run, an exported model, an evaluation
JSON), and training resumes from its latest checkpoint, so rerunning the same command after
an interruption (SIGTERM, kill -9, a machine that went away) continues where it stopped.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional, Sequence

import numpy as np

from fosc_jax import rundir
from fosc_jax.rundir.integrity import atomic_write_json
from fosc_jax.reproduce import experiments
from fosc_jax.reproduce.experiments import Experiment, run_config
from fosc_jax.reproduce.plan import Run, Scale
from fosc_jax.reproduce.provenance import record_run

# Relative cost of a run's epoch against a Standard epoch (for the wall-time estimate):
# Curriculum's k rises from 0 to 10 (about half the steps on average), Unsecured has no attack.
COST = {"unsecured": 0.2, "curriculum": 0.55}
# A run of another architecture (the CIFAR surrogate, trained naturally), per epoch against a
# Standard epoch of the CIFAR CNN: a ResNet-50 forward-backward has about 10 times the CNN's
# FLOPs (2.47 against 0.24 GFLOP forward), one a step against Standard's 11, yet its epoch
# measured 4.5 Standard epochs on a 2-core CPU (540 s against 118 s; cifar_plan.SCALES).
MODEL_COST = {"resnet50": 4.5}


def _cost(run: Run, scale: Scale) -> float:
    """A run's epoch cost in Standard cpu-scale epochs (attack steps, images and model)."""
    if run.model in MODEL_COST:
        return MODEL_COST[run.model]
    steps = (run.steps or 10) / 10
    if run.study == "section3":
        images = (scale.s3_train_images or 60_000) / (scale.train_images or 60_000)
        return COST.get(run.defense, 1.0) * steps * images
    return COST.get(run.defense, 1.0) * steps
EVAL_FILE = "{name}.json"


def experiment_of(runs: Sequence[Run]) -> Experiment:
    """The experiment of ``runs`` (MNIST for none)."""
    return experiments.of(runs[0]) if runs else experiments.MNIST


def run_dir(out: str, run: Run) -> str:
    return os.path.join(out, "runs", run.name)


def model_dir(out: str, run: Run) -> str:
    return os.path.join(out, "models", run.name)


def epochs_done(workdir: str) -> int:
    """Epochs recorded in the run's metrics.jsonl (0 when it has not started)."""
    if not os.path.exists(os.path.join(workdir, rundir.METRICS_FILE)):
        return 0
    return len(rundir.read_metrics(workdir))


def _estimate(runs: Sequence[Run], scale: Scale, out: str) -> Optional[float]:
    """Seconds left for training, from the measured seconds per Standard-equivalent epoch."""
    per_epoch = []
    for run in runs:
        wd = run_dir(out, run)
        if epochs_done(wd):
            rows = rundir.read_metrics(wd)
            per_epoch += [r["seconds"] / _cost(run, scale) for r in rows]
    if not per_epoch:
        return None
    unit = float(np.median(per_epoch))
    left = 0.0
    for run in runs:
        total = scale.epochs_of(run)
        left += (total - epochs_done(run_dir(out, run))) * unit * _cost(run, scale)
    return left


def train_all(runs: Sequence[Run], scale: Scale, source: str, out: str,
              dataset=None, log=print, should_stop=None, together: bool = False) -> bool:
    """Train each run to its last epoch (resuming), printing a wall-time estimate as soon as
    the first epoch of the reproduction is measured and after every run.

    One stop flag (SIGTERM/SIGINT by default) serves every run: once it is set, the run in
    progress checkpoints and returns, no further run starts, and this returns False.
    ``together``: first train the runs that can share one compiled program (not started
    yet, same study, configs that ``check_group`` accepts: the seeds of Standard and Dynamic,
    say) as one program (:func:`fosc_jax.training.multirun.train_many`)."""
    from fosc_jax.training import PreemptionFlag, train_and_evaluate

    flag = should_stop if should_stop is not None else PreemptionFlag()
    try:
        if together and not _train_groups(runs, scale, source, out, dataset, log, flag):
            return False
        return _train_runs(runs, scale, source, out, dataset, log, flag, train_and_evaluate)
    finally:
        if should_stop is None:
            flag.restore()


def shared_program_groups(runs: Sequence[Run], scale: Scale, source: str,
                          out: str) -> list[list[Run]]:
    """Groups of two or more unstarted runs, per study, whose configs can share one program
    (all of the study's, else its Standard and Dynamic runs); the rest train one by one."""
    from fosc_jax.errors import ConfigError
    from fosc_jax.training.group import check_group

    groups = []
    for study in dict.fromkeys(r.study for r in runs):
        fresh = [r for r in runs if r.study == study and r.role != "demo"
                 and not epochs_done(run_dir(out, r))]
        for candidate in (fresh, [r for r in fresh if r.defense in ("standard", "dynamic")]):
            if len(candidate) < 2:
                continue
            try:
                check_group([run_config(r, scale, source) for r in candidate], loads_data=False)
            except ConfigError:
                continue
            groups.append(candidate)
            break
    return groups


def _train_groups(runs, scale, source, out, dataset, log, flag) -> bool:
    from fosc_jax.training.multirun import train_many

    for group in shared_program_groups(runs, scale, source, out):
        for r in group:
            record_run(out, r.name, "train")
        log(f"[train] {len(group)} runs in one program: {', '.join(r.name for r in group)}")
        t0 = time.time()
        train_many([run_config(r, scale, source) for r in group],
                   [run_dir(out, r) for r in group], dataset=dataset, should_stop=flag)
        if _stopped(flag):
            log("[train] stopped by a signal or the time budget; rerun the same command to "
                "resume")
            return False
        export_all(group, scale, out, log=log)
        log(f"[train] {len(group)} runs done in {time.time() - t0:.0f} s")
    return True


def _stopped(flag) -> bool:
    return bool(flag(0))


def _train_runs(runs, scale, source, out, dataset, log, flag, train_and_evaluate) -> bool:
    for run in runs:
        config = run_config(run, scale, source)
        wd = run_dir(out, run)
        done = epochs_done(wd)
        if done >= config.num_epochs:
            log(f"[train] {run.name}: finished ({done} epochs), skipped")
            continue
        record_run(out, run.name, "train")  # only a stage that trains records its commit
        log(f"[train] {run.name}: {run.defense}, seed {run.seed}, epochs {done + 1}.."
            f"{config.num_epochs}, {os.path.relpath(wd, out)}")
        t0 = time.time()
        if _estimate(runs, scale, out) is None:
            # Measure one epoch first so the estimate comes early (resume continues after).
            first = config.copy_and_resolve_references()
            first.stop_after_epochs = 1
            train_and_evaluate(first, wd, dataset=dataset, should_stop=flag)
            if _stopped(flag):
                break
            left = _estimate(runs, scale, out)
            log(f"[train] first epoch took {time.time() - t0:.0f} s; training left: about "
                f"{left / 60:.0f} min (+ evaluation)")
        train_and_evaluate(config, wd, dataset=dataset, should_stop=flag)
        if _stopped(flag):
            break
        export_all([run], scale, out, log=log)
        left = _estimate(runs, scale, out)
        log(f"[train] {run.name}: done in {time.time() - t0:.0f} s; training left: about "
            f"{(left or 0) / 60:.0f} min")
    if _stopped(flag):
        log("[train] stopped by a signal; rerun the same command to resume")
        return False
    return True


def export_all(runs: Sequence[Run], scale: Scale, out: str, log=print) -> None:
    """Write each finished run's final model to out/models/NAME (committed; re-scorable).

    With the exported model, metrics.jsonl and the FOSC samples a finished run needs nothing
    else (its checkpoints are not committed), so a fresh checkout resumes the reproduction."""
    for run in runs:
        target = model_dir(out, run)
        if rundir.export_complete(target):  # an interrupted export is written again
            continue
        total = run_config(run, scale, "bundled").num_epochs
        if epochs_done(run_dir(out, run)) < total:
            log(f"[export] {run.name}: not finished, skipped")
            continue
        rundir.export_classifier(run_dir(out, run), target)
        log(f"[export] {run.name} -> {os.path.relpath(target, out)}")


def test_subset(ds, n: Optional[int], seed: int = 0):
    from fosc_jax.data.subset import eval_subset_indices
    idx = eval_subset_indices(len(ds.y_test), n, seed)
    return ds.x_test[idx], ds.y_test[idx].astype(np.int32), idx


def _scored_n(path: str) -> int:
    with open(path) as f:
        return int(json.load(f)["clean"]["n"])


def never() -> bool:
    return False


def score_each(runs: Sequence[Run], out: str, path_of: Callable[[Run], str],
               score: Callable[[Run, str], dict], describe: Callable[[dict], str], *,
               tag: str, stage: str, log=print, stop=never) -> dict:
    """One scoring stage's loop: ``score(run, exported_model_folder)`` for each run, its
    record (plus ``eval_seconds``) written atomically to ``path_of(run)``. A run already
    scored is read back, one not exported yet is skipped with a log line, ``stop()`` is
    checked between models, and provenance records the ``stage`` only for runs scored."""
    records = {}
    for run in runs:
        path = path_of(run)
        if os.path.exists(path):
            with open(path) as f:
                records[run.name] = json.load(f)
            continue
        if not os.path.exists(os.path.join(model_dir(out, run), rundir.EXPORT_FILE)):
            log(f"[{tag}] {run.name}: no exported model yet, skipped")
            continue
        if stop():
            return records
        record_run(out, run.name, stage)
        t0 = time.time()
        rec = score(run, model_dir(out, run))
        rec["eval_seconds"] = time.time() - t0
        atomic_write_json(path, rec)
        records[run.name] = rec
        log(f"[{tag}] {run.name}: {describe(rec)} ({rec['eval_seconds']:.0f} s)")
    return records


def evaluate_all(runs: Sequence[Run], scale: Scale, ds, out: str, log=print,
                 progress: bool = False, stop=never) -> dict:
    """Every model: white-box (the scale's attacks: clean, FGSM, PGD-10, PGD-20, CW-inf) with
    the honesty checks and a PGD-10 eps sweep; then black-box: the same attacks crafted once
    on the surrogate and scored on every defense. One JSON per model in out/eval; finished
    ones are skipped. A surrogate the experiment scores clean only gets no attack."""
    from fosc_jax.evaluation.api import evaluate_classifier

    runs = [r for r in runs if r.study == "table"]
    exp = experiment_of(runs)
    x, y, _ = test_subset(ds, scale.test_images)
    xs, ys, _ = test_subset(ds, scale.sweep_images, seed=1)
    for run in runs:   # a record scored on another test set size is redone (and replaced)
        for p in (_eval_path(out, run), _partial_path(out, run)):
            if os.path.exists(p) and _scored_n(p) != len(y):
                log(f"[eval] {run.name}: scored on {_scored_n(p)} images, not {len(y)}: redone")
                os.remove(p)
    missing = [r.name for r in runs if not os.path.exists(
        os.path.join(model_dir(out, r), rundir.EXPORT_FILE))]
    if missing:
        log(f"[eval] not exported yet, skipped: {', '.join(missing)}")
        runs = [r for r in runs if r.name not in missing]
    records, models = {}, {}
    for run in runs:
        models[run.name] = rundir.load_classifier(model_dir(out, run))
        done = next((p for p in (_eval_path(out, run), _partial_path(out, run))
                     if os.path.exists(p)), None)
        if done is not None:
            with open(done) as f:
                records[run.name] = json.load(f)
            continue
        if stop():
            return records
        record_run(out, run.name, "eval")  # only when this stage scores something
        t0 = time.time()
        attacks = scale.attacks
        if run.role == "surrogate" and exp.surrogate_attacks is not None:
            attacks = exp.surrogate_attacks
        rec = evaluate_classifier(models[run.name], x, y, attacks=attacks,
                                  batch_size=exp.eval_batch, seed=0, honesty=bool(attacks),
                                  progress=progress)
        sweep = (evaluate_classifier(models[run.name], xs, ys, attacks=(),
                                     eps_sweep=exp.sweep_eps, batch_size=exp.eval_batch,
                                     seed=0, honesty=False, progress=progress)["eps_sweep"]
                 if attacks else [])
        rec.update(eps_sweep=sweep, eps_sweep_n=int(len(ys)) if sweep else 0, run=run.name,
                   role=run.role, eval_seconds=time.time() - t0)
        records[run.name] = rec
        # The surrogate has no black-box entry; the others wait for the transfer pass.
        atomic_write_json(
            _eval_path(out, run) if run.role == "surrogate" else _partial_path(out, run), rec)
        wb = rec["white_box"]
        log(f"[eval] {run.name}: clean {rec['clean']['accuracy']:.4f} "
            + " ".join(f"{k} {v['accuracy']:.4f}" for k, v in wb.items())
            + f" (n={len(y)}, {rec['eval_seconds']:.0f} s)")
    _black_box(runs, scale, exp, models, records, x, y, out, log, progress, stop)
    return records


def _eval_path(out: str, run: Run) -> str:
    return os.path.join(out, "eval", EVAL_FILE.format(name=run.name))


def _partial_path(out: str, run: Run) -> str:
    return os.path.join(out, "eval", "white_box_only", f"{run.name}.json")


def _black_box(runs, scale, exp, models, records, x, y, out, log, progress, stop) -> None:
    """The transfer pass: each attack crafted once on the surrogate, on the first
    ``scale.blackbox_images`` of the evaluation subset, scored on every defense still
    without a final record; completes their records (black-box entry, honesty checks)."""
    from fosc_jax.evaluation import honesty
    from fosc_jax.evaluation.suite import accuracy_entry, attack_spec, transfer_attack

    surrogate = next((r for r in runs if r.role == "surrogate"), None)
    todo = [r for r in runs if r.role != "surrogate" and not os.path.exists(_eval_path(out, r))]
    if surrogate is None or not todo or stop():
        return
    for r in todo:
        record_run(out, r.name, "eval")
    t0 = time.time()
    n = len(y) if scale.blackbox_images is None else min(scale.blackbox_images, len(y))
    names = list(records[todo[0].name]["white_box"])
    bb = {r.name: {} for r in todo}
    for name in names:
        correct = transfer_attack(models[surrogate.name], [models[r.name] for r in todo],
                                  x[:n], y[:n], attack_spec(name),
                                  float(records[todo[0].name]["eps"]),
                                  batch_size=exp.eval_batch, seed=0, progress=progress)
        for r, c in zip(todo, correct):
            bb[r.name][name] = accuracy_entry(c)
    for r in todo:
        rec = records[r.name]
        rec["black_box"] = dict(attacks=bb[r.name], epoch=int(models[surrogate.name].epoch),
                                name=models[surrogate.name].config.name)
        rec["honesty"]["warnings"] = honesty.run_checks(
            rec, rec["honesty"]["z"], rec["honesty"]["restart_margin"])
        rec["eval_seconds"] += (time.time() - t0) / len(todo)
        atomic_write_json(_eval_path(out, r), rec)
        os.remove(_partial_path(out, r)) if os.path.exists(_partial_path(out, r)) else None
    log(f"[eval] black-box from {surrogate.name} on {len(todo)} models (n={n}): "
        f"{time.time() - t0:.0f} s")
