"""train_many: K runs trained side by side in one compiled program, each in its own run
directory, written as :func:`~fosc_jax.training.loop.train_and_evaluate` writes it
(config.json, data_sizes.json, metrics.jsonl, fosc/, TensorBoard events, checkpoints/), so
every tool that reads a run directory reads each of them.

The step is :class:`~fosc_jax.training.group.RunGroup` (vmapped over a leading run axis);
everything per epoch that is not the step (held-out accuracy, the defense's end of epoch,
FOSC samples, metrics rows, checkpoints) runs per run on the host, as a single run does it.
Resume: every run restores its own newest good checkpoint; runs at different steps are
refused (one line) -- resume them with train.py one by one, or start the group afresh.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fosc_jax import parallel, schedules
from fosc_jax.config import validate_config
from fosc_jax.data import Dataset, epoch_permutation, subset
from fosc_jax.errors import ConfigError
from fosc_jax.rundir import checkpoints, config_file, tensorboard
from fosc_jax.rundir import metrics as metric_files
from fosc_jax.rundir.lock import WorkdirLock
from fosc_jax.training import loop
from fosc_jax.training.group import (RunGroup, check_group, own_fosc, run_metrics,
                                     stack_settings)
from fosc_jax.training.monitor import (EpochLog, fosc_summary, progress, subset_accuracy,
                                       summary_line)
from fosc_jax.training.preemption import PreemptionFlag


@dataclasses.dataclass
class _Run:
    """One run of the group on the host: its config, directory, checkpoints, eval subset."""
    config: ml_collections.ConfigDict
    workdir: str
    manager: object
    x_eval: np.ndarray
    y_eval: np.ndarray
    events: object = None


def pays_on(backend: str) -> bool:
    """Whether K runs in one program are expected to beat the same runs one after another
    on ``backend`` (``jax.default_backend()``), for a caller's default. XLA:CPU: no, measured
    slower (BENCHMARKS.md, "K runs in one program": vmap over the weights makes every
    convolution a grouped one, which XLA:CPU runs far below K plain ones). Accelerators:
    yes, expected (one small model leaves most of the chip idle); bench_multirun.py
    measures it."""
    return backend != "cpu"


def train_many(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
               dataset: Optional[Dataset] = None, mesh=None,
               should_stop: Optional[Callable[[int], bool]] = None) -> list[dict]:
    """Train ``configs[k]`` in ``workdirs[k]`` side by side in one compiled program; returns
    each run's last finished epoch's metrics row. The configs may differ only in
    :data:`~fosc_jax.training.group.PER_RUN_FIELDS` (seed, defense, attack budget...);
    ConfigError (one line) otherwise. ``dataset``, ``mesh`` and ``should_stop`` as in
    :func:`~fosc_jax.training.loop.train_and_evaluate` (one ``should_stop`` for the group)."""
    if len(configs) != len(workdirs):
        raise ConfigError(f"train_many: {len(configs)} configs but {len(workdirs)} workdirs.")
    paths = [os.path.realpath(w) for w in workdirs]
    if len(set(paths)) != len(paths):
        raise ConfigError("train_many: two runs of the group share a workdir; give each its own.")
    if jax.process_count() > 1:
        raise ConfigError("train_many runs in one process; train multi-process runs one by "
                          "one with train.py.")
    mesh = mesh if mesh is not None else parallel.make_mesh()
    for config in configs:
        validate_config(config, num_devices=mesh.size, check_data=dataset is None)
    check_group(configs, loads_data=dataset is None)
    locks = []
    try:
        for w in workdirs:
            locks.append(WorkdirLock(w))
        return _train_locked(list(configs), list(workdirs), dataset, mesh, should_stop)
    finally:
        for lock in locks:
            lock.release()


def _train_locked(configs, workdirs, dataset, mesh, should_stop) -> list[dict]:
    """train_many once every workdir is locked: checks, then files, then training."""
    for config, w in zip(configs, workdirs):
        config_file.check_config(w, config)
    ds = dataset if dataset is not None else loop.load_training_data(configs[0])
    batch = int(configs[0].batch_size)
    if ds.x_train.shape[0] < batch:
        raise ConfigError(f"config.batch_size = {batch} exceeds the {ds.x_train.shape[0]} "
                          "training examples; lower it or raise data.train_limit.")
    sizes = {"train_examples": int(ds.x_train.shape[0]), "test_examples": int(ds.x_test.shape[0])}
    for config, w in zip(configs, workdirs):
        config_file.check_data_sizes(w, config, sizes)
    steps_per_epoch = ds.x_train.shape[0] // batch
    group = RunGroup(configs, ds.x_train.shape[1:], ds.num_classes, steps_per_epoch, mesh)
    runs = []
    try:
        for config, w in zip(configs, workdirs):
            n_eval = int(config.eval.num_examples)
            idx = (subset.eval_subset_indices(ds.x_test.shape[0], n_eval, config.seed) if n_eval
                   else np.arange(0))
            runs.append(_Run(config, w, checkpoints.make_manager(w, config), ds.x_test[idx],
                             ds.y_test[idx].astype(np.int32)))
        states = _restore(group, runs)
        for run in runs:
            config_file.write_config(run.workdir, run.config)
            config_file.write_data_sizes(run.workdir, run.config, sizes)
        start_epoch = int(states[0].epoch)
        skip = int(states[0].step) - start_epoch * steps_per_epoch
        for run in runs:
            metric_files.truncate_metrics(run.workdir, start_epoch + 1)
        if start_epoch >= configs[0].num_epochs:
            print(f"{len(runs)} runs are complete ({start_epoch} of {configs[0].num_epochs} "
                  "epochs, nothing to do); raise num_epochs to train further.", flush=True)
            return [{} for _ in runs]
        if int(states[0].step):
            print(f"resumed {len(runs)} runs at epoch {start_epoch + 1}, step "
                  f"{int(states[0].step)}", flush=True)
        print(f"multirun: {group.describe()}", flush=True)
        flag = PreemptionFlag(install=should_stop is None)
        try:
            return _epochs(group, runs, ds, states, start_epoch, skip, should_stop or flag)
        finally:
            flag.restore()
    finally:
        for run in runs:
            run.manager.wait_until_finished()
            run.manager.close()


def _restore(group: RunGroup, runs: list) -> list:
    """Each run's newest good checkpoint (or a fresh state from its seed); ConfigError when
    the runs stand at different steps."""
    states = []
    for trainer, run in zip(group.trainers, runs):
        state, _ = checkpoints.restore_newest_good(
            run.manager, trainer.abstract_state(),
            quarantine=os.path.join(run.workdir, checkpoints.CORRUPT_DIR))
        states.append(state if state is not None else
                      trainer.init_state(jax.random.PRNGKey(run.config.seed)))
    steps = [int(s.step) for s in states]
    if len(set(steps)) > 1:
        where = ", ".join(f"{r.workdir}: {s}" for r, s in zip(runs, steps))
        raise ConfigError(f"the runs of the group stand at different steps ({where}); resume "
                          "them one by one with train.py, or start the group in new workdirs.")
    return states


def _epochs(group: RunGroup, runs: list, ds: Dataset, states: list, start_epoch: int,
            skip: int, should_stop) -> list[dict]:
    """The epoch loop: the vmapped steps, then per run what train_and_evaluate does."""
    configs, mesh = group.configs, group.mesh
    steps_per_epoch = group.lead.steps_per_epoch
    x_train, y_train = parallel.replicate((jnp.asarray(ds.x_train),
                                           jnp.asarray(ds.y_train, jnp.int32)), mesh)
    chunk = max(1, min(int(configs[0].log_every), steps_per_epoch))
    defense_states = [jax.device_get(s.defense_state) for s in states]
    state = group.stack(states)
    last = [{} for _ in runs]
    end_epoch = configs[0].num_epochs
    if configs[0].stop_after_epochs:
        end_epoch = min(end_epoch, start_epoch + int(configs[0].stop_after_epochs))
    quiet = all(c.quiet for c in configs)
    for epoch in range(start_epoch, end_epoch):
        per_run = [t.settings_for_epoch(epoch, d)
                   for t, d in zip(group.trainers, defense_states)]
        settings = stack_settings(per_run)
        perm = jnp.stack([_permutation(s, epoch, ds.x_train.shape[0], group.batch_size)
                          for s in states])                      # [K, steps, B]
        state = state.replace(epoch=parallel.replicate(
            jnp.full((group.size,), epoch, jnp.int32), mesh))
        first = skip if epoch == start_epoch else 0
        logs, t0 = [EpochLog() for _ in runs], time.time()
        bar = progress(steps_per_epoch,
                       f"epoch {epoch + 1}/{configs[0].num_epochs} ({group.size} runs)", quiet)
        bar.update(first)
        for start in range(first, steps_per_epoch, chunk):
            rows = jnp.swapaxes(perm[:, start:start + chunk], 0, 1)  # [n, K, B]
            state, metrics = group.run(state, x_train, y_train, rows, settings)
            metrics = own_fosc(parallel.to_host(metrics), per_run)
            n = len(metrics["train_loss"])
            for k, (run, log) in enumerate(zip(runs, logs)):
                bad = log.add(run_metrics(metrics, k))
                if bad is not None:
                    bar.close()
                    loop._non_finite(run.workdir, run.manager,
                                     int(state.step[k]) - n + bad + 1, epoch)
            bar.update(n)
            if start + chunk < steps_per_epoch and should_stop(int(state.step[0])):
                bar.close()
                for run, s in zip(runs, group.unstack(state, defense_states)):
                    loop._save(run.manager, s, mesh)
                print(f"stopped {group.size} runs at step {int(state.step[0])} (epoch "
                      f"{epoch + 1}); checkpoints saved, rerun the same call to resume",
                      flush=True)
                return last
        bar.close()
        seconds = time.time() - t0
        state = state.replace(epoch=jnp.full((group.size,), epoch + 1, jnp.int32))
        states = group.unstack(state, defense_states)
        stop = should_stop(int(state.step[0]))
        for k, (trainer, run) in enumerate(zip(group.trainers, runs)):
            row, states[k] = _end_epoch(trainer, run, states[k], defense_states[k], logs[k],
                                        epoch, first, seconds, group.size, mesh)
            defense_states[k] = jax.device_get(states[k].defense_state)
            if ((epoch + 1) % int(run.config.checkpoint_every) == 0 or epoch + 1 == end_epoch
                    or stop):
                loop._save(run.manager, states[k], mesh)
            print(f"{os.path.basename(os.path.normpath(run.workdir))}: {summary_line(row)}",
                  flush=True)  # one line per run and epoch, also in quiet mode
            last[k] = row
        state = group.stack(states)
        if stop:
            print(f"stopped after epoch {epoch + 1}; rerun the same call to resume", flush=True)
            break
    return last


def _permutation(state, epoch: int, n: int, batch: int):
    """The run's data order in ``epoch``, as train_and_evaluate draws it from its key."""
    key = jax.random.fold_in(jax.random.fold_in(state.key, 0x5eed), epoch)
    return epoch_permutation(key, n, batch)


def _end_epoch(trainer, run: _Run, state, defense_state: dict, log: EpochLog, epoch: int,
               first: int, seconds: float, group_size: int, mesh) -> tuple:
    """One run's end of ``epoch``: held-out accuracy, the defense's state, its FOSC sample,
    metrics row and TensorBoard events. Returns (row, state)."""
    config = run.config
    classifier = trainer.classifier(state)
    clean_acc, pgd_acc = subset_accuracy(
        classifier, run.x_eval, run.y_eval, eps=config.attack.eps, num_steps=10,
        step_fraction=0.25, batch_size=int(config.eval.batch_size), seed=config.seed,
        mesh=mesh)
    state = loop._end_epoch(trainer.defense, state, defense_state, epoch, classifier,
                            run.x_eval, run.y_eval, mesh)
    fosc_all = np.concatenate(log.fosc)
    row = {"epoch": epoch + 1, "lr": schedules.lr_at_epoch(
               config.optim.lr, config.optim.lr_drop_epochs, config.optim.lr_drop_factor, epoch),
           **trainer.defense.describe(epoch, defense_state), **log.means(),
           **fosc_summary(fosc_all), "test_clean_acc": clean_acc, "test_pgd10_acc": pgd_acc,
           "images_per_sec": log.steps * trainer.batch_size / seconds,
           "seconds": seconds, "resumed_mid_epoch": first > 0,
           "executor": "compiled", "runs_in_program": group_size}
    steps_all = np.concatenate(log.num_steps)
    metric_files.save_fosc_sample(run.workdir, epoch + 1, fosc_all, np.concatenate(log.adv_loss),
                                  steps_all, int(config.fosc_sample_size), config.seed)
    metric_files.append_metrics(run.workdir, row)
    run.events = run.events or tensorboard.EventWriter(run.workdir)
    tensorboard.write_epoch(run.events, row, fosc_all, steps_all)
    return row, state


__all__ = ["train_many", "pays_on"]
