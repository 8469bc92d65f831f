"""The training step and loop shared by every defense.

One step: gather the batch from the on-device training split, augment, attack (the masked
PGD loop configured by the defense's :class:`~fosc_jax.defenses.AttackSettings`, ascending
its attack loss), then one optax update on the defense's training loss. The step knows no
defense by name: it calls the hooks of :class:`~fosc_jax.defenses.Defense`.

By default each step is one compiled call (``steps_per_call`` > 1 scans several per call,
which pays on accelerators); a Dynamic attack on XLA:CPU checks its early exit from the host
between blocks of steps and shrinks the batch to the examples still attacking when the attack
treats examples independently (:meth:`Trainer.step`). The host reads metrics back once per
``log_every`` steps (progress bar) and at epoch ends (metrics, checkpoint).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
import threading
import time
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import Array

from fosc_jax import (checkpointing, compaction, cpu_malloc, legacy, parallel, schedules,
                      tensorboard)
from fosc_jax.attacks import AttackResult, PGDLoop
from fosc_jax.classifier import Classifier
from fosc_jax.config import validate_config
from fosc_jax.data import Dataset, epoch_permutation, get_augment, load_dataset, to_float
from fosc_jax.data import subset
from fosc_jax.defenses import AttackSettings, get_defense
from fosc_jax.errors import ConfigError, NonFiniteError, data_errors
from fosc_jax.models import get_model
from fosc_jax.train_state import TrainState, make_optimizer
from fosc_jax.workdir_lock import WorkdirLock

# The smallest batch the host-checked exit compacts to: a batch of 8 still costs about as
# much per example as one of 128 on XLA:CPU, and every size is one more compiled program.
COMPACT_MIN = 8


def _dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


class Trainer:
    """Builds the model, optimizer, mesh and the compiled step for one config.

    ``train_step`` runs one step; ``train_chunk`` runs several with ``lax.scan`` over rows of
    an index matrix into the on-device training split (what the epoch loop uses).
    """

    def __init__(self, config: ml_collections.ConfigDict, input_shape: tuple,
                 num_classes: int, steps_per_epoch: int = 1, mesh=None,
                 exit_check: Optional[str] = None, exit_block: int = 3,
                 compact: Optional[bool] = None, compact_min: int = COMPACT_MIN):
        self.config = config
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.steps_per_epoch = steps_per_epoch
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.model = get_model(config.model.name, num_classes=num_classes,
                               dtype=_dtype(config.model.dtype))
        self.defense = get_defense(config)
        self.tx = make_optimizer(config, steps_per_epoch)
        self.augment = get_augment(config.data.augment)
        self.batch_size = int(config.batch_size)
        self.steps_per_call = int(config.steps_per_call)
        # Dynamic AT's early exit: "device" runs a while_loop over blocks of exit_block
        # steps inside the compiled step (accelerators); "host" checks after each block from
        # Python (XLA:CPU, where loop bodies run slower than flat code). Same results.
        self.exit_check = exit_check or ("host" if jax.default_backend() == "cpu" else "device")
        if self.exit_check not in ("host", "device"):
            raise ValueError(f"exit_check must be 'host' or 'device', got {exit_check!r}.")
        self.exit_block = int(exit_block)
        cpu_malloc.keep_freed_memory_on_cpu(jax.default_backend())   # BENCHMARKS.md
        # The host-checked exit also shrinks the batch to its active examples (halving, down
        # to compact_min); exact only when the attack treats examples independently.
        exact = config.attack.bn_mode == "eval"
        if compact and not exact:
            raise ValueError("compact=True needs config.attack.bn_mode = 'eval': with "
                             "BatchNorm in train mode while attacking, an example's gradient "
                             "depends on its batch, so a smaller batch would change it.")
        if compact and self.exit_check != "host":
            raise ValueError("compact=True needs exit_check='host' (the batch shrinks "
                             "between the host-checked blocks).")
        self.compact = (self.exit_check == "host" and exact) if compact is None else compact
        self.compact_sizes = (compaction.ladder(self.batch_size, compact_min, self.mesh.size)
                              if self.compact else (self.batch_size,))
        self.train_step = jax.jit(self._train_step, donate_argnums=0)
        self.train_indexed = jax.jit(self._train_indexed, donate_argnums=0)
        self.train_chunk = jax.jit(self._train_chunk, donate_argnums=0)
        self.host_begin = jax.jit(self._host_begin)
        self.host_block = jax.jit(self._host_block)
        self.host_finish = jax.jit(self._host_finish, donate_argnums=0)
        self.host_gather = jax.jit(self._host_gather, static_argnums=7)
        self.host_part_block = jax.jit(self._host_part_block)
        self.host_scatter = jax.jit(self._host_scatter)

    # -- state ---------------------------------------------------------------------------
    def init_state(self, key: Array) -> TrainState:
        """Fresh parameters and optimizer state, replicated over the mesh."""
        key = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        init_key, run_key = jax.random.split(jnp.asarray(key, jnp.uint32))
        x = jnp.zeros((1,) + self.input_shape, jnp.float32)
        variables = jax.jit(functools.partial(self.model.init, train=False))(init_key, x)
        state = TrainState(
            step=jnp.int32(0), epoch=jnp.int32(0), params=variables["params"],
            batch_stats=variables["batch_stats"], opt_state=self.tx.init(variables["params"]),
            key=run_key, defense_state=jax.tree_util.tree_map(jnp.asarray,
                                                              self.defense.init_state()))
        return parallel.replicate(state, self.mesh)

    def abstract_state(self) -> TrainState:
        """Shapes/dtypes/shardings of a state, the target for restoring a checkpoint."""
        shapes = jax.eval_shape(self.init_state, jax.random.PRNGKey(0))
        sharding = parallel.replicated(self.mesh)
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

    def settings_for_epoch(self, epoch: int, defense_state: Optional[dict] = None
                           ) -> AttackSettings:
        """The defense's attack in ``epoch`` (0-based); ``defense_state`` on the host
        (default: a fresh run's)."""
        if defense_state is None:
            defense_state = self.defense.init_state()
        return self.defense.attack_settings(epoch, self.batch_size, defense_state)

    def classifier(self, state: TrainState) -> Classifier:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        return Classifier(model=self.model, variables=variables, config=self.config,
                          epoch=int(state.epoch))

    # -- compiled step -------------------------------------------------------------------
    def _attack_logits_fn(self, params, batch_stats):
        """Logits the attack differentiates: BN in train mode (batch stats, updates dropped)
        or inference mode, as config.attack.bn_mode says. Weights are constants here."""
        variables = jax.lax.stop_gradient({"params": params, "batch_stats": batch_stats})
        if self.config.attack.bn_mode == "train":
            return lambda x: self.model.apply(variables, x, train=True,
                                              mutable=["batch_stats"])[0]
        return lambda x: self.model.apply(variables, x, train=False)

    def _prepare(self, state: TrainState, x_uint8: Array, y: Array):
        """Place the batch, augment it; returns (x in [0, 1], int labels, attack key)."""
        x_uint8 = parallel.constrain_batch(x_uint8, self.mesh)
        y = parallel.constrain_batch(jnp.asarray(y, jnp.int32), self.mesh)
        aug_key, attack_key = jax.random.split(jax.random.fold_in(state.key, state.step))
        return self.augment(aug_key, to_float(x_uint8)), y, attack_key

    def _clean_logits(self, state: TrainState, x: Array) -> Optional[Array]:
        """The clean prediction the defense's attack loss needs (None if it needs none)."""
        if not self.defense.needs_clean_logits:
            return None
        return self._attack_logits_fn(state.params, state.batch_stats)(x)

    def _loop(self, state: TrainState, x: Array, y: Array, key: Array,
              settings: AttackSettings, clean_logits: Optional[Array] = None,
              origin: Optional[Array] = None) -> PGDLoop:
        """The defense's attack on this batch: its settings, ascending its attack loss
        (``origin``: the FOSC origin of a batch whose start was drawn earlier)."""
        logits_fn = self._attack_logits_fn(state.params, state.batch_stats)
        if clean_logits is None:
            clean_logits = self._clean_logits(state, x)
        eps = self.config.attack.eps if settings.eps is None else settings.eps
        return PGDLoop(logits_fn, x, y, key, eps=eps, step_size=settings.step_size,
                       max_steps=settings.max_steps, budget=settings.budget,
                       threshold=settings.threshold, random_start=settings.random_start,
                       loss=self.defense.attack_loss(clean_logits),
                       fosc_origin=settings.fosc_origin, start_std=settings.start_std,
                       origin=origin)

    def _train_step(self, state: TrainState, x_uint8: Array, y: Array,
                    settings: AttackSettings):
        """One step on a batch of uint8 images: augment, attack, update. Returns
        (state, metrics) where metrics holds means and per-example FOSC / steps."""
        x, y, key = self._prepare(state, x_uint8, y)
        if settings.max_steps == 0:
            return self._update(state, x, y, None, settings)
        loop = self._loop(state, x, y, key, settings)
        s = loop.step(loop.init())  # the first step is always taken
        if settings.early_exit and self.exit_check == "device":
            s = loop.run_blocks(s, self.exit_block)
        else:
            s = loop.steps(s, settings.max_steps - 1)
        return self._update(state, x, y, loop.result(s), settings)

    def _update(self, state: TrainState, x: Array, y: Array, result: Optional[AttackResult],
                settings: AttackSettings):
        """The optimizer step on the defense's training loss (the clean batch stands in
        for x_adv when there is no attack)."""
        if result is not None:
            x_adv, fosc, steps = result.x_adv, result.fosc, result.num_steps
        else:
            x_adv = x
            fosc = jnp.full(y.shape, jnp.nan, jnp.float32)
            steps = jnp.zeros(y.shape, jnp.int32)
        inference = {"params": state.params, "batch_stats": state.batch_stats}
        weights = self.defense.example_weights(
            lambda z: self.model.apply(inference, z, train=False), x_adv, y, state.epoch,
            attacked=settings.max_steps > 0)

        def loss_fn(params):
            def forward(z, batch_stats):
                logits, updates = self.model.apply({"params": params, "batch_stats": batch_stats},
                                                   z, train=True, mutable=["batch_stats"])
                return logits, updates["batch_stats"]
            per_example, logits, batch_stats = self.defense.training_loss(
                forward, state.batch_stats, x, x_adv, y, result)
            return jnp.mean(weights * per_example), (logits, batch_stats, per_example)

        (loss, (logits, batch_stats, per_example)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        clean_logits = self.model.apply(inference, x, train=False)
        # One flag per step, fetched with the other metrics at the chunk boundary.
        finite = jnp.isfinite(loss)
        for leaf in jax.tree_util.tree_leaves((params, batch_stats)):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        metrics = {
            "finite": finite,
            "train_loss": loss,
            "train_adv_acc": jnp.mean(jnp.argmax(logits, -1) == y),
            "train_clean_acc": jnp.mean(jnp.argmax(clean_logits, -1) == y),
            "attack_steps_mean": jnp.mean(steps.astype(jnp.float32)),
            "fosc": fosc, "num_steps": steps, "adv_loss": per_example,
        }
        state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
        return state, metrics

    def _train_indexed(self, state: TrainState, x_train: Array, y_train: Array,
                       idx: Array, settings: AttackSettings):
        """One step on the batch ``idx`` [B] gathered from the on-device split."""
        return self._train_step(state, x_train[idx], y_train[idx], settings)

    # -- the early exit driven from the host (XLA:CPU) ----------------------------------
    def _host_begin(self, state, x_uint8, y, settings):
        """Augment, the clean prediction (if the attack loss needs it), start point and the
        first attack step."""
        x, y, key = self._prepare(state, x_uint8, y)
        clean = self._clean_logits(state, x)
        loop = self._loop(state, x, y, key, settings, clean)
        return x, y, key, clean, loop.step(loop.init())

    def _host_block(self, state, x, y, key, clean, s, settings):
        """``exit_block`` more (masked) attack steps."""
        return self._loop(state, x, y, key, settings, clean).steps(s, self.exit_block)

    def _host_finish(self, state, x, y, key, clean, s, settings):
        loop = self._loop(state, x, y, key, settings, clean)
        return self._update(state, x, y, loop.result(s), settings)

    def _host_gather(self, state, x, y, key, clean, s, settings, size: int):
        """The ``size`` rows holding every active example (:mod:`fosc_jax.compaction`):
        their indices and what the attack needs to go on with them (``part``)."""
        idx = compaction.active_first(s["active"], size)
        origin = self._loop(state, x, y, key, settings, clean).origin
        part = dict(x=x[idx], y=y[idx], clean=compaction.take(clean, idx),
                    origin=origin[idx], budget=settings.budget[idx],
                    step_size=settings.step_size[idx], s=compaction.take_state(s, idx))
        return idx, part

    def _host_part_block(self, state, key, part, settings):
        """``exit_block`` more attack steps on a compacted batch (``part``)."""
        settings = settings.replace(budget=part["budget"], step_size=part["step_size"])
        loop = self._loop(state, part["x"], part["y"], key, settings, part["clean"],
                          origin=part["origin"])
        return {**part, "s": loop.steps(part["s"], self.exit_block)}

    def _host_scatter(self, s, idx, part):
        return compaction.put_state(s, part["s"], idx)

    def step(self, state: TrainState, x_uint8: Array, y: Array, settings: AttackSettings):
        """One training step on a batch (the compiled step, or the host-checked early exit
        for a Dynamic attack on XLA:CPU). Returns (state, metrics); donates ``state``."""
        if settings.early_exit and self.exit_check == "host":
            return self._host_exit_step(state, x_uint8, y, settings)
        return self.train_step(state, x_uint8, y, settings)

    def _host_exit_step(self, state, x_uint8, y, settings):
        """One training step whose attack stops once no example is active, checked on the
        host after every block of ``exit_block`` steps: on XLA:CPU three flat programs
        run faster than one program with a while_loop, whose body runs ~1.6x slower there
        (BENCHMARKS.md). Same numbers as the in-graph loop (stopped examples are masked).
        With ``compact``, a check that finds the active examples fit a smaller size of
        ``compact_sizes`` moves them into a batch of that size for the next blocks
        (:mod:`fosc_jax.compaction`), so a batch no longer costs its slowest example at
        full width."""
        x, y, key, clean, s = self.host_begin(state, x_uint8, y, settings)
        idx, part = None, None          # the compacted batch, once there is one
        size, taken = self.compact_sizes[0], 1
        while taken < settings.max_steps:
            active = int(jnp.sum((s if part is None else part["s"])["active"]))
            if active == 0:
                break
            smaller = compaction.fit(active, self.compact_sizes)
            if smaller < size:
                if part is not None:
                    s = self.host_scatter(s, idx, part)
                size = smaller
                idx, part = self.host_gather(state, x, y, key, clean, s, settings, size)
            if part is None:
                s = self.host_block(state, x, y, key, clean, s, settings)
            else:
                part = self.host_part_block(state, key, part, settings)
            taken += self.exit_block
        if part is not None:
            s = self.host_scatter(s, idx, part)
        return self.host_finish(state, x, y, key, clean, s, settings)

    def _train_chunk(self, state: TrainState, x_train: Array, y_train: Array,
                     indices: Array, settings: AttackSettings):
        """``indices.shape[0]`` steps in one compiled scan; batches gathered on device."""
        def body(state, idx):
            return self._train_indexed(state, x_train, y_train, idx, settings)
        return jax.lax.scan(body, state, indices)

    def run_steps(self, state: TrainState, x_train: Array, y_train: Array,
                  indices: Array, settings: AttackSettings):
        """Run one step per row of ``indices`` [n, B]; metrics come back stacked on a
        leading axis, still on device. ``steps_per_call`` > 1 scans that many steps per
        compiled call (fewer dispatches; pays on accelerators, not on CPU)."""
        outs = []
        for start in range(0, indices.shape[0], self.steps_per_call):
            rows = indices[start:start + self.steps_per_call]
            if settings.early_exit and self.exit_check == "host":
                state, m = self._host_exit_step(state, x_train[rows[0]], y_train[rows[0]],
                                                settings)
                m = jax.tree_util.tree_map(lambda a: a[None], m)
            elif self.steps_per_call == 1:
                state, m = self.train_indexed(state, x_train, y_train, rows[0], settings)
                m = jax.tree_util.tree_map(lambda a: a[None], m)
            else:
                state, m = self.train_chunk(state, x_train, y_train, rows, settings)
            outs.append(m)
        metrics = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *outs)
        return state, metrics


# -- evaluation during training ---------------------------------------------------------
def subset_accuracy(classifier: Classifier, x_uint8: np.ndarray, y: np.ndarray, *,
                    eps: float, num_steps: int, step_fraction: float, batch_size: int,
                    seed: int, mesh=None) -> tuple[float, float]:
    """(clean, PGD-num_steps) accuracy on a test subset, through the evaluation suite."""
    from fosc_jax.evaluation.suite import AttackSpec, Placement, Suite

    if len(y) == 0:
        return float("nan"), float("nan")
    placement = Placement(mesh if mesh is not None and mesh.size > 1 else None)
    suite = Suite(classifier, x_uint8, y, batch_size, seed=seed, progress=False,
                  placement=placement)
    spec = AttackSpec(f"pgd{num_steps}", f"PGD-{num_steps}", num_steps=num_steps,
                      step_fraction=step_fraction)
    clean = float(np.mean(suite.predict() == suite.y))
    robust = float(np.mean(suite.attack(spec, eps)["correct"]))
    return clean, robust


# -- the loop ----------------------------------------------------------------------------
@dataclasses.dataclass
class EpochLog:
    """Accumulates per-chunk device metrics of one epoch on the host."""
    sums: dict = dataclasses.field(default_factory=dict)
    steps: int = 0
    fosc: list = dataclasses.field(default_factory=list)
    num_steps: list = dataclasses.field(default_factory=list)
    adv_loss: list = dataclasses.field(default_factory=list)

    def add(self, metrics: dict) -> Optional[int]:
        """Accumulate a chunk; returns the index of its first non-finite step (None if all
        are finite). Collective in a multi-process run (arrays span processes)."""
        metrics = parallel.to_host(metrics)
        bad = np.flatnonzero(~np.asarray(metrics.get("finite", True)).reshape(-1))
        if bad.size:
            return int(bad[0])
        for name in ("train_loss", "train_adv_acc", "train_clean_acc", "attack_steps_mean"):
            self.sums[name] = self.sums.get(name, 0.0) + float(np.sum(metrics[name]))
        self.steps += len(metrics["train_loss"])
        self.fosc.append(np.asarray(metrics["fosc"]).reshape(-1))
        self.num_steps.append(np.asarray(metrics["num_steps"]).reshape(-1))
        self.adv_loss.append(np.asarray(metrics["adv_loss"]).reshape(-1))
        return None

    def means(self) -> dict:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


def _fosc_summary(fosc: np.ndarray) -> dict:
    finite = fosc[np.isfinite(fosc)]
    if finite.size == 0:
        return {"fosc_mean": None, "fosc_p50": None, "fosc_p90": None}
    return {"fosc_mean": float(finite.mean()), "fosc_p50": float(np.percentile(finite, 50)),
            "fosc_p90": float(np.percentile(finite, 90))}


def _progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=quiet, leave=False, dynamic_ncols=True)


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
                                    config.data.get("subset", "random"), int(config.seed))
        ds = dataclasses.replace(ds, x_train=ds.x_train[idx], y_train=ds.y_train[idx])
    subset.warn_missing_classes(ds.y_train, ds.num_classes)
    return ds


class PreemptionFlag:
    """Set by SIGTERM (what schedulers and preemptible TPU/GPU VMs send before killing a job)
    or SIGINT (Ctrl-C); a second SIGINT interrupts at once (KeyboardInterrupt).

    The training loop checks it at every logging chunk, saves a checkpoint of the exact
    mid-epoch state and returns; rerunning the command resumes bitwise-identically.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, install: bool = True):
        self.requested = False
        self._previous: dict = {}
        if install and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"received {signal.Signals(signum).name}: checkpointing at the next chunk "
              "boundary, then exiting", flush=True)

    def __call__(self, step: int) -> bool:  # noqa: ARG002
        return self.requested

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: Optional[Dataset] = None, mesh=None,
                       should_stop: Optional[Callable[[int], bool]] = None) -> dict:
    """Train ``config`` in ``workdir``, resuming from its latest checkpoint; returns the last
    finished epoch's metrics. Writes metrics.jsonl (epochs 1-based, as the console prints
    them), fosc/epoch_XXXX.npz (the same numbering), TensorBoard events, config.json and
    checkpoints/ (Orbax, one per ``checkpoint_every`` epochs, named by global step).

    ``dataset`` replaces the configured source (tests, notebooks); ``mesh`` defaults to all
    devices on a 'data' axis. ``should_stop(step)`` is polled at every logging chunk
    (default: "was SIGTERM received"); when it says yes the exact state is checkpointed
    mid-epoch and the function returns.
    """
    parallel.maybe_initialize_distributed()
    mesh = mesh if mesh is not None else parallel.make_mesh()
    validate_config(config, num_devices=mesh.size, check_data=dataset is None)
    primary = parallel.is_primary()
    lock = WorkdirLock(workdir) if primary else None  # one training per workdir
    try:
        return _train_locked(config, workdir, dataset, mesh, should_stop, primary)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(config, workdir, dataset, mesh, should_stop, primary) -> dict:
    """train_and_evaluate once the workdir is locked: every check, then config.json, then
    training. Nothing is written before the run is known to be able to start."""
    checkpointing.check_config(workdir, config)
    ds = dataset if dataset is not None else load_training_data(config)
    if ds.x_train.shape[0] < config.batch_size:
        raise ConfigError(f"config.batch_size = {config.batch_size} is invalid: it exceeds the "
                          f"{ds.x_train.shape[0]} training examples of data.source = "
                          f"{config.data.source!r} (after data.train_limit); lower it or raise "
                          "data.train_limit.")
    sizes = {"train_examples": int(ds.x_train.shape[0]), "test_examples": int(ds.x_test.shape[0])}
    checkpointing.check_data_sizes(workdir, config, sizes)
    steps_per_epoch = ds.x_train.shape[0] // config.batch_size
    trainer = Trainer(config, ds.x_train.shape[1:], ds.num_classes, steps_per_epoch, mesh)
    manager = checkpointing.make_manager(workdir, config)
    try:
        state, _ = checkpointing.restore_newest_good(
            manager, trainer.abstract_state(),
            quarantine=os.path.join(workdir, checkpointing.CORRUPT_DIR))
        if primary:  # the run can start: only now record its config and data
            checkpointing.write_config(workdir, config)
            checkpointing.write_data_sizes(workdir, config, sizes)
        if state is None:
            state = trainer.init_state(jax.random.PRNGKey(config.seed))
        start_epoch = int(state.epoch)
        skip = int(state.step) - start_epoch * steps_per_epoch  # > 0: preempted mid-epoch
        if primary:
            legacy.migrate_run(workdir)  # 0-based epochs of older versions -> 1-based
            checkpointing.truncate_metrics(workdir, start_epoch + 1)  # rows are 1-based
        if start_epoch >= config.num_epochs:
            print(f"{workdir}: the run is complete ({start_epoch} of {config.num_epochs} epochs, "
                  "nothing to do); raise --config.num_epochs to train further.", flush=True)
            return {}
        if int(state.step) and primary:
            print(f"resumed {workdir} at epoch {start_epoch + 1}, step {int(state.step)}",
                  flush=True)
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
        state = state.replace(epoch=jnp.int32(epoch))
        first = skip if epoch == start_epoch else 0
        epoch_log, t0 = EpochLog(), time.time()
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{config.num_epochs}",
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
            mesh=mesh)
        state = _end_epoch(trainer.defense, state, defense_state, epoch, classifier, x_eval,
                           y_eval, mesh)
        fosc_all = np.concatenate(epoch_log.fosc)
        row = {"epoch": epoch + 1, "lr": schedules.lr_at_epoch(
                   config.optim.lr, config.optim.lr_drop_epochs, config.optim.lr_drop_factor, epoch),
               **trainer.defense.describe(epoch, defense_state), **epoch_log.means(),
               **_fosc_summary(fosc_all), "test_clean_acc": clean_acc, "test_pgd10_acc": pgd_acc,
               "images_per_sec": epoch_log.steps * trainer.batch_size / seconds,
               "seconds": seconds, "resumed_mid_epoch": first > 0}
        if primary:
            steps_all = np.concatenate(epoch_log.num_steps)
            checkpointing.save_fosc_sample(
                workdir, epoch + 1, fosc_all, np.concatenate(epoch_log.adv_loss), steps_all,
                int(config.fosc_sample_size), config.seed)
            checkpointing.append_metrics(workdir, row)
            events = events or tensorboard.EventWriter(workdir)
            tensorboard.write_epoch(events, row, fosc_all, steps_all)
        stop = stop_requested()
        if (epoch + 1) % int(config.checkpoint_every) == 0 or epoch + 1 == end_epoch or stop:
            _save(manager, state, mesh)
        say(_summary_line(row))  # one line per epoch, also in quiet mode
        last = row
        if stop:
            say(f"stopped after epoch {epoch + 1}; rerun the same command to resume")
            break
    return last


def _save(manager, state: TrainState, mesh) -> None:
    """Checkpoint ``state`` at its global step; scalars set on the host (epoch, curriculum)
    are first placed like the rest, which multi-process Orbax saves need."""
    checkpointing.save(manager, int(state.step), parallel.replicate(state, mesh))


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
    return state.replace(defense_state=jax.tree_util.tree_map(jnp.asarray, new))


def _fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)


def _summary_line(row: dict) -> str:
    sched = (f"c_t {_fmt(row['c_t'], '.3f')}" if row.get("c_t") is not None else
             f"k {row['curriculum_k']}" if row.get("curriculum_k") is not None else "")
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f} "
            f"adv_acc {row['train_adv_acc']:.4f} clean_acc {row['train_clean_acc']:.4f} "
            f"{sched} steps {row['attack_steps_mean']:.2f} fosc_mean {_fmt(row['fosc_mean'])} | "
            f"test clean {row['test_clean_acc']:.4f} pgd10 {row['test_pgd10_acc']:.4f} | "
            f"{row['images_per_sec']:.0f} img/s {row['seconds']:.1f}s")
