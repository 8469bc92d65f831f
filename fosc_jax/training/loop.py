"""The training loop: train a config in a run directory, resuming from its checkpoints.

Per epoch: the defense's attack settings, a seeded permutation of the training split, then
chunks of ``log_every`` steps through the trainer's executor (the host reads metrics back
once per chunk: progress bar, NaN check, preemption), then the held-out accuracy, the
defense's end-of-epoch update, metrics.jsonl / FOSC sample / TensorBoard rows and a
checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fosc_jax import parallel, schedules
from fosc_jax.classifier import Classifier
from fosc_jax.config import validate_config
from fosc_jax.data import Dataset, epoch_permutation, load_dataset, subset
from fosc_jax.errors import (ConfigError, NonFiniteError, RunFileError, RunHistoryError,
                             UserError, data_errors, warn)
from fosc_jax.training.monitor import (EpochLog, fosc_summary, progress, subset_accuracy,
                                       summary_line)
from fosc_jax.training.preemption import PreemptionFlag
from fosc_jax.training.train_state import TrainState
from fosc_jax.rundir import checkpoints, config_file, history, tensorboard
from fosc_jax.rundir import metrics as metric_files
from fosc_jax.rundir.lock import WorkdirLock
from fosc_jax.training.trainer import Trainer


def load_training_data(config: ml_collections.ConfigDict) -> Dataset:
    """The configured data set; with ``data.train_limit`` N, N training examples chosen by
    ``data.subset`` ("random": seeded by ``config.seed``; "first"). Warns when the training
    set lacks a class. A source that cannot be read raises DataError (the loader's message,
    prefixed by the fields)."""
    source, name = config.data.source, config.data.name
    with data_errors(f"config.data.source = {source!r} with data.name = {name!r}"):
        ds = load_dataset(source, name, data_dir=config.data.data_dir)
    if config.data.train_limit:
        idx = subset.subset_indices(len(ds.y_train), int(config.data.train_limit),
                                    config.data.subset, int(config.seed))
        ds = dataclasses.replace(ds, x_train=ds.x_train[idx], y_train=ds.y_train[idx])
    subset.warn_missing_classes(ds.y_train, ds.num_classes)
    return ds


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: Optional[Dataset] = None, mesh=None,
                       should_stop: Optional[Callable[[int], bool]] = None,
                       restart: bool = False) -> dict:
    """Train ``config`` in ``workdir``, resuming from its latest checkpoint; returns the last
    finished epoch's metrics. Writes metrics.jsonl (epochs 1-based, as the console prints
    them), fosc/epoch_XXXX.npz (the same numbering), TensorBoard events, config.json,
    data_sizes.json and checkpoints/ (Orbax, one per ``checkpoint_every`` epochs, named by
    global step).

    A workdir with a run's history but no usable checkpoint raises RunHistoryError rather
    than start over it; ``restart`` first moves a workdir that holds anything aside
    (:func:`~fosc_jax.rundir.history.move_aside`) and starts afresh. Every check (config,
    data, the other processes' config and workdir) runs before the workdir is created.

    ``dataset`` replaces the configured source (tests, notebooks); ``mesh`` defaults to all
    devices on a 'data' axis. ``should_stop(step)`` is polled at every logging chunk
    (default: "was SIGTERM received"); when it says yes the exact state is checkpointed
    mid-epoch and the function returns.
    """
    parallel.maybe_initialize_distributed()
    mesh = mesh if mesh is not None else parallel.make_mesh()
    validate_config(config, num_devices=mesh.size, check_data=dataset is None)
    parallel.check_same_launch(config.to_json(sort_keys=True), workdir)
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        raise RunFileError(f"--workdir {workdir} is a file, not a folder; pass a folder path "
                           "(it is created if missing).")
    if not restart:  # read-only checks of an existing run, before the data load
        config_file.check_config(workdir, config)
        history.describe(workdir)  # a garbled metrics.jsonl row fails here
    ds = dataset if dataset is not None else load_training_data(config)
    if ds.x_train.shape[0] < config.batch_size:
        raise ConfigError(f"config.batch_size = {config.batch_size} is invalid: it exceeds the "
                          f"{ds.x_train.shape[0]} training examples of data.source = "
                          f"{config.data.source!r} (after data.train_limit); lower it or raise "
                          "data.train_limit.")
    data = config_file.data_record(ds)
    if not restart:
        config_file.check_data_sizes(workdir, config, data)
    primary = parallel.is_primary()
    lock = error = None
    if primary:  # one training per workdir; only now is the workdir created
        try:
            lock = _lock(workdir, restart)
        except UserError as err:
            error = err
    if parallel.any_process(error is not None):  # the others stop with process 0
        raise error or UserError(f"process 0 could not start training in {workdir} (its "
                                 "error line says why).")
    try:
        return _train_locked(config, workdir, ds, data, mesh, should_stop, primary)
    finally:
        if lock is not None:
            lock.release()


def _lock(workdir: str, restart: bool) -> WorkdirLock:
    """Lock ``workdir``; with ``restart``, a workdir holding anything is first moved aside
    (under its lock, so no training is using it) and a fresh one locked."""
    lock = WorkdirLock(workdir)
    if restart and history.holds_anything(workdir):
        try:
            moved = history.move_aside(workdir)
        finally:
            lock.release()
        print(f"--restart: moved the previous run to {moved}", flush=True)
        lock = WorkdirLock(workdir)
    return lock


def _train_locked(config, workdir, ds, data, mesh, should_stop, primary) -> dict:
    """train_and_evaluate once the workdir is locked: checkpoints, then config.json, then
    training. Nothing is written before the run is known to be able to start."""
    if primary:
        for path in history.remove_stale_temp_files(workdir):
            warn(f"removed {path}, a temporary file left by a crashed write.")
    steps_per_epoch = ds.x_train.shape[0] // config.batch_size
    trainer = Trainer(config, ds.x_train.shape[1:], ds.num_classes, steps_per_epoch, mesh)
    manager = checkpoints.make_manager(workdir, config)
    try:
        state, _ = checkpoints.restore_newest_good(
            manager, trainer.abstract_state(),
            quarantine=os.path.join(workdir, checkpoints.CORRUPT_DIR))
        past = history.describe(workdir) if state is None else []
        if parallel.any_process(bool(past)):  # never start over a run's history
            raise RunHistoryError(
                f"{workdir} holds a run ({', '.join(past) or 'see process 0'}) but no usable "
                f"checkpoint in {checkpoints.CHECKPOINT_DIR}/; restore it from a backup, or "
                "rerun with --restart to move the old run aside and start afresh.")
        if primary:  # the run can start: only now record its config and data
            config_file.write_config(workdir, config)
            config_file.write_data_sizes(workdir, config, data)
        if state is None:
            state = trainer.init_state(jax.random.PRNGKey(config.seed))
        start_epoch = int(state.epoch)
        skip = int(state.step) - start_epoch * steps_per_epoch  # > 0: preempted mid-epoch
        if primary:  # rows and events of epochs after the checkpoint are replayed
            metric_files.truncate_metrics(workdir, start_epoch + 1)  # rows are 1-based
            tensorboard.truncate_events(workdir, start_epoch + 1)
        if start_epoch >= config.num_epochs:
            print(f"{workdir}: the run is complete ({start_epoch} of {config.num_epochs} epochs, "
                  "nothing to do); raise --config.num_epochs to train further.", flush=True)
            return {}
        if int(state.step) and primary:
            print(f"resumed {workdir} at epoch {start_epoch + 1}, step {int(state.step)}",
                  flush=True)
        if primary:
            print(f"executor {trainer.executor.name} (config.executor = "
                  f"{config.get('executor', 'auto')!r}, backend {jax.default_backend()}): "
                  f"{trainer.executor.describe()}", flush=True)
        flag = PreemptionFlag(install=should_stop is None)
        try:
            return _epochs(config, workdir, ds, trainer, manager, state, start_epoch, skip,
                           should_stop or flag, mesh)
        finally:
            flag.restore()
    finally:
        manager.wait_until_finished()
        manager.close()


def _epochs(config, workdir, ds, trainer, manager, state, start_epoch, skip, should_stop,
            mesh) -> dict:
    """The epoch loop of :func:`train_and_evaluate`."""
    steps_per_epoch = trainer.steps_per_epoch
    x_train, y_train = parallel.replicate((jnp.asarray(ds.x_train),
                                           jnp.asarray(ds.y_train, jnp.int32)), mesh)
    n_eval = int(config.eval.num_examples)
    test_idx = (subset.eval_subset_indices(ds.x_test.shape[0], n_eval, config.seed) if n_eval
                else np.arange(0))  # the same seeded subset every epoch
    x_eval, y_eval = ds.x_test[test_idx], ds.y_test[test_idx].astype(np.int32)
    chunk = max(1, min(int(config.log_every), steps_per_epoch))
    primary = parallel.is_primary()
    say = functools.partial(print, flush=True) if primary else (lambda *a, **k: None)

    def stop_requested() -> bool:  # the same answer on every process
        return parallel.any_process(should_stop(int(state.step)))

    last, events = {}, None
    end_epoch = config.num_epochs
    if config.stop_after_epochs:
        end_epoch = min(end_epoch, start_epoch + int(config.stop_after_epochs))
    for epoch in range(start_epoch, end_epoch):
        defense_state = jax.device_get(state.defense_state)
        settings = trainer.settings_for_epoch(epoch, defense_state)
        perm_key = jax.random.fold_in(jax.random.fold_in(state.key, 0x5eed), epoch)
        perm = epoch_permutation(perm_key, ds.x_train.shape[0], trainer.batch_size)
        # Placed like the step's outputs: an unplaced scalar is another jit cache key, so
        # every new program (each curriculum level) would compile twice.
        state = state.replace(epoch=parallel.replicate(jnp.int32(epoch), mesh))
        first = skip if epoch == start_epoch else 0
        epoch_log, t0 = EpochLog(), time.time()
        bar = progress(steps_per_epoch, f"epoch {epoch + 1}/{config.num_epochs}",
                        config.quiet or not primary)
        bar.update(first)
        for start in range(first, steps_per_epoch, chunk):
            state, metrics = trainer.run_steps(state, x_train, y_train,
                                               perm[start:start + chunk], settings)
            bad = epoch_log.add(metrics)
            if bad is not None:
                bar.close()
                first_bad = int(state.step) - len(metrics["train_loss"]) + bad + 1  # 1-based
                _non_finite(workdir, manager, first_bad, epoch)
            bar.update(len(metrics["train_loss"]))
            means = epoch_log.means()
            bar.set_postfix(loss=f"{means['train_loss']:.3f}",
                            adv_acc=f"{means['train_adv_acc']:.3f}")
            if start + chunk < steps_per_epoch and stop_requested():
                bar.close()
                _save(manager, state, mesh)
                say(f"stopped at step {int(state.step)} (epoch {epoch + 1}); checkpoint "
                    "saved, rerun the same command to resume")
                return last
        bar.close()
        seconds = time.time() - t0
        state = state.replace(epoch=jnp.int32(epoch + 1))
        classifier = trainer.classifier(state)
        clean_acc, pgd_acc = subset_accuracy(
            classifier, x_eval, y_eval, eps=config.attack.eps, num_steps=10,
            step_fraction=0.25, batch_size=int(config.eval.batch_size), seed=config.seed,
            mesh=mesh, progress=not (config.quiet or not primary))
        state = _end_epoch(trainer.defense, state, defense_state, epoch, classifier, x_eval,
                           y_eval, mesh)
        fosc_all = np.concatenate(epoch_log.fosc)
        row = {"epoch": epoch + 1, "lr": schedules.lr_at_epoch(
                   config.optim.lr, config.optim.lr_drop_epochs, config.optim.lr_drop_factor, epoch),
               **trainer.defense.describe(epoch, defense_state), **epoch_log.means(),
               **fosc_summary(fosc_all), "test_clean_acc": clean_acc, "test_pgd10_acc": pgd_acc,
               "images_per_sec": epoch_log.steps * trainer.batch_size / seconds,
               "seconds": seconds, "resumed_mid_epoch": first > 0,
               "executor": trainer.executor.name}
        if primary:
            steps_all = np.concatenate(epoch_log.num_steps)
            metric_files.save_fosc_sample(
                workdir, epoch + 1, fosc_all, np.concatenate(epoch_log.adv_loss), steps_all,
                int(config.fosc_sample_size), config.seed)
            metric_files.append_metrics(workdir, row)
            events = events or tensorboard.EventWriter(workdir)
            tensorboard.write_epoch(events, row, fosc_all, steps_all)
        stop = stop_requested()
        if (epoch + 1) % int(config.checkpoint_every) == 0 or epoch + 1 == end_epoch or stop:
            _save(manager, state, mesh)
        say(summary_line(row))  # one line per epoch, also in quiet mode
        last = row
        if stop:
            say(f"stopped after epoch {epoch + 1}; rerun the same command to resume")
            break
    return last


def _save(manager, state: TrainState, mesh) -> None:
    """Checkpoint ``state`` at its global step; scalars set on the host (epoch, curriculum)
    are first placed like the rest, which multi-process Orbax saves need."""
    checkpoints.save(manager, int(state.step), parallel.replicate(state, mesh))


def _non_finite(workdir: str, manager, step: int, epoch: int) -> None:
    """Stop the run: step ``step`` (1-based global count) made the loss or weights NaN/Inf.
    Nothing of it is saved, so the newest checkpoint is the last good state."""
    newest = manager.latest_step()
    kept = (f"the newest checkpoint (step {newest}, {workdir}/checkpoints) is the last good "
            "state" if newest is not None else "no checkpoint was saved")
    raise NonFiniteError(
        f"training diverged: the loss or the weights became NaN/Inf at step {step} (epoch "
        f"{epoch + 1}); nothing from that step on was saved and {kept}. Lower optim.lr or "
        "check the data, then rerun (a rerun resumes from the newest checkpoint).")


def _end_epoch(defense, state: TrainState, defense_state: dict, epoch: int,
               classifier: Classifier, x_eval, y_eval, mesh) -> TrainState:
    """The defense's state after ``epoch``; its probe measures held-out (clean, PGD-n)
    accuracy with step ``fraction * eps`` (the curriculum's plateau rule uses it)."""
    config = defense.config

    def probe(num_steps: int, step_fraction: float) -> tuple:
        return subset_accuracy(classifier, x_eval, y_eval, eps=config.attack.eps,
                               num_steps=num_steps, step_fraction=step_fraction,
                               batch_size=int(config.eval.batch_size), seed=config.seed,
                               mesh=mesh)

    new = defense.end_epoch(defense_state, epoch, probe)
    if new is defense_state:
        return state
    new = jax.tree_util.tree_map(jnp.asarray, new)
    return state.replace(defense_state=parallel.replicate(new, mesh))  # as the epoch above


