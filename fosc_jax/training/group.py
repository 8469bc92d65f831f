"""K training runs as one compiled program: the step vmapped over a leading run axis.

A :class:`RunGroup` holds one :class:`~fosc_jax.training.trainer.Trainer` per run (its
defense, settings, classifier) and one vmapped, jit-compiled step that takes every run's
state, batch indices and attack settings stacked on axis 0. The four masked-PGD defenses
(Standard, Dynamic, Curriculum, Unsecured, and FGSM-then-PGD) differ only in their
per-example budgets, step sizes and thresholds, which are traced arrays, so seeds and these
defenses share one program; the static fields are merged (``max_steps``: the group's
maximum; early exit: if any run has it). Each example still stops at its own budget and
threshold (stopped examples are masked), so a run's numbers are those of the same run
trained alone with ``config.executor = "compiled"``, up to float rounding (vmap batches the
convolutions differently).

The training loop with run directories is :mod:`fosc_jax.training.multirun`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import Array

from fosc_jax import parallel
from fosc_jax.defenses import AttackSettings
from fosc_jax.errors import ConfigError
from fosc_jax.training import executors
from fosc_jax.training.executors import EXIT_BLOCK
from fosc_jax.training.trainer import Trainer
from fosc_jax.training.train_state import TrainState

# Fields each run of a group may set for itself; every other field must be equal. The
# defense and attack fields only change the traced settings (checked again per epoch by
# :func:`stack_settings`); eval and the FOSC sample run per run on the host.
PER_RUN_FIELDS = ("name", "seed", "defense", "attack.eps", "attack.num_steps",
                  "attack.step_size", "attack.random_start", "eval", "fosc_sample_size",
                  "executor", "quiet", "checkpoint_keep")
# Defense hooks traced inside the step: the runs of a group must share them.
TRACED_HOOKS = ("attack_loss", "training_loss", "example_weights")


def _flat(config: ml_collections.ConfigDict) -> dict:
    out = {}

    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, (dict, ml_collections.ConfigDict)):
                walk(v, prefix + k + ".")
            else:
                out[prefix + k] = v
    walk(config.to_dict(), "")
    return out


def _per_run(field: str) -> bool:
    return any(field == f or field.startswith(f + ".") for f in PER_RUN_FIELDS)


def check_group(configs: Sequence[ml_collections.ConfigDict], loads_data: bool = True) -> None:
    """Refuse (ConfigError, one line) configs that cannot share one program: a shared field
    (model, data, batch size, epochs, optimizer, dtype, ...) that differs, defenses with
    other traced losses (TRADES with the rest), different ``defense.loss_weighting`` (or it
    on, next to a run that may skip its attack), or
    seeded random training subsets (``data.train_limit`` with ``data.subset = 'random'``;
    checked when ``loads_data``, i.e. the data set comes from the configs)."""
    from fosc_jax.defenses import get_defense

    if not configs:
        raise ConfigError("train K runs: no configs given.")
    first = _flat(configs[0])
    for i, config in enumerate(configs[1:], 1):
        flat = _flat(config)
        differ = sorted(k for k in set(first) | set(flat)
                        if not _per_run(k) and first.get(k) != flat.get(k))
        if differ:
            k = differ[0]
            raise ConfigError(
                f"runs 0 and {i} cannot share one program: config.{k} differs "
                f"({first.get(k)!r} vs {flat.get(k)!r}); only {', '.join(PER_RUN_FIELDS)} "
                "may differ between the runs of a group.")
        if config.defense.loss_weighting != configs[0].defense.loss_weighting:
            raise ConfigError(f"runs 0 and {i} cannot share one program: "
                              "config.defense.loss_weighting differs.")
    types = [type(get_defense(c)) for c in configs]
    for i, t in enumerate(types[1:], 1):
        if any(getattr(t, h) is not getattr(types[0], h) for h in TRACED_HOOKS) or (
                t.needs_clean_logits != types[0].needs_clean_logits):
            raise ConfigError(f"runs 0 and {i} cannot share one program: defenses "
                              f"{configs[0].defense.name!r} and {configs[i].defense.name!r} "
                              "have different attack or training losses.")
    names = {c.defense.name for c in configs}
    if configs[0].defense.loss_weighting and (len(names) > 1 or names == {"curriculum"}):
        # Whether the outer loss is weighted is decided by the group's static max_steps, so
        # a run that skips its attack in an epoch (Unsecured, Curriculum level 0) would be.
        raise ConfigError("runs with defense.loss_weighting = True share one program only "
                          "with the same defense (not curriculum); train them one by one.")
    seeds = {int(c.seed) for c in configs}
    if (loads_data and configs[0].data.train_limit and configs[0].data.subset == "random"
            and len(seeds) > 1):
        raise ConfigError("runs with different seeds cannot share one program with "
                          "data.train_limit and data.subset = 'random' (each seed draws its "
                          "own training subset); set data.subset = 'first'.")


def stack_settings(settings: Sequence[AttackSettings]) -> AttackSettings:
    """One AttackSettings for the group: traced fields stacked on a leading run axis,
    ``max_steps`` the largest, ``early_exit`` if any run exits early. A run without an
    attack (``max_steps`` 0) gets budget 0: its batch stays clean. Static fields that select
    different maths (random start, its kind, FOSC origin) must agree between attacking runs
    (ConfigError otherwise, e.g. FGSM-then-PGD's FGSM epochs next to PGD)."""
    attacking = [s for s in settings if s.max_steps > 0]
    if not attacking:
        lead = settings[0]
    else:
        lead = attacking[0]
        for field in ("random_start", "start_std", "fosc_origin"):
            values = {getattr(s, field) for s in attacking}
            if len(values) > 1:
                raise ConfigError(f"the runs' attacks cannot share one program this epoch: "
                                  f"their {field} differs ({sorted(map(str, values))}).")

    def budget(s):
        return s.budget if s.max_steps > 0 else jnp.zeros_like(s.budget)
    return AttackSettings(
        threshold=jnp.stack([jnp.asarray(s.threshold, jnp.float32) for s in settings]),
        budget=jnp.stack([budget(s) for s in settings]),
        step_size=jnp.stack([s.step_size for s in settings]),
        eps=jnp.stack([jnp.asarray(s.eps, jnp.float32) for s in settings]),
        max_steps=max(s.max_steps for s in settings), random_start=lead.random_start,
        start_std=lead.start_std, early_exit=any(s.early_exit for s in settings),
        fosc_origin=lead.fosc_origin)


class RunGroup:
    """K runs of configs that share a model, data and batch size, stepped as one program.

    States are stacked :class:`TrainState` s whose ``defense_state`` is left out (``{}``):
    it only feeds the host-side settings and may differ in structure between defenses.
    """

    def __init__(self, configs: Sequence[ml_collections.ConfigDict], input_shape: tuple,
                 num_classes: int, steps_per_epoch: int = 1, mesh=None):
        check_group(configs, loads_data=False)
        self.configs = list(configs)
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.trainers = [Trainer(c, input_shape, num_classes, steps_per_epoch, self.mesh)
                         for c in configs]
        self.lead = self.trainers[0]   # its traced maths serves every run (check_group)
        self.size = len(configs)
        self.batch_size = self.lead.batch_size
        self.steps_per_call = self.lead.steps_per_call
        # The single-run compiled path, driving :meth:`train_step` (all K runs) instead of
        # one run's: gathering x_train[idx] with idx [K, B] gives every run its batch.
        self.executor = executors.Compiled(self, EXIT_BLOCK)

    def describe(self) -> str:
        return (f"{self.size} runs vmapped in one compiled program, "
                f"{executors._calls(self.steps_per_call)}; an attack's early "
                f"exit is an in-graph while_loop over {EXIT_BLOCK}-step blocks that runs until "
                "every run's examples have stopped")

    # -- states -------------------------------------------------------------------------
    def stack(self, states: Sequence[TrainState]) -> TrainState:
        """Per-run states -> one state with a leading run axis (defense_state left out)."""
        bare = [s.replace(defense_state={}) for s in states]
        return parallel.replicate(jax.tree_util.tree_map(lambda *a: jnp.stack(a), *bare),
                                  self.mesh)

    def unstack(self, state: TrainState, defense_states: Sequence[dict]) -> list[TrainState]:
        """The stacked state -> one state per run, each with its defense state (host)."""
        out = []
        for i, ds in enumerate(defense_states):
            run = jax.tree_util.tree_map(lambda a: a[i], state)
            out.append(parallel.replicate(
                run.replace(defense_state=jax.tree_util.tree_map(jnp.asarray, ds)), self.mesh))
        return out

    def settings_for_epoch(self, epoch: int, defense_states: Sequence[dict]) -> AttackSettings:
        """Every run's attack in ``epoch`` (0-based), stacked (:func:`stack_settings`)."""
        return stack_settings([t.settings_for_epoch(epoch, ds)
                               for t, ds in zip(self.trainers, defense_states)])

    # -- the step: the compiled executor, running the vmapped step -----------------------
    def train_step(self, state: TrainState, x_uint8: Array, y: Array,
                   settings: AttackSettings, exit_block: Optional[int] = None):
        """Every run's step on its batch x_uint8 [K, B, ...], y [K, B] (traced)."""
        def one(state, x_uint8, y, settings):
            return self.lead.train_step(state, x_uint8, y, settings, exit_block=exit_block)
        return jax.vmap(one)(state, x_uint8, y, settings)

    def step(self, state: TrainState, x_uint8: Array, y: Array, settings: AttackSettings):
        """One step of every run on its batch x_uint8 [K, B, ...], y [K, B]: (state, metrics
        with a leading run axis). Donates ``state``."""
        return self.executor.step(state, x_uint8, y, settings)

    def run(self, state: TrainState, x_train: Array, y_train: Array, indices: Array,
            settings: AttackSettings):
        """One step per row of ``indices`` [n, K, B] (row r, run k: run k's batch of its
        r-th step): (state, metrics [n, K, ...] on device). Donates ``state``."""
        return self.executor.run(state, x_train, y_train, indices, settings)


def own_fosc(metrics: dict, settings: Sequence[AttackSettings]) -> dict:
    """Host metrics [n, K, ...] with FOSC set to NaN for runs that did not attack this
    epoch (their batch ran the loop with budget 0; alone they report no FOSC)."""
    fosc = np.array(metrics["fosc"], copy=True)
    for k, s in enumerate(settings):
        if s.max_steps == 0:
            fosc[:, k] = np.nan
    return {**metrics, "fosc": fosc}


def run_metrics(metrics: dict, k: int) -> dict:
    """Run ``k``'s slice of host metrics [n, K, ...] -> [n, ...]."""
    return {name: np.asarray(v)[:, k] for name, v in metrics.items()}


__all__ = ["RunGroup", "check_group", "stack_settings", "own_fosc", "run_metrics",
           "PER_RUN_FIELDS"]
