"""The training step's maths, shared by every defense and every executor.

One step: gather the batch, augment, attack (the masked PGD loop configured by the defense's
:class:`~fosc_jax.defenses.AttackSettings`, ascending its attack loss), then one optax update
on the defense's training loss. The step knows no defense by name: it calls the hooks of
:class:`~fosc_jax.defenses.Defense`. How the step is compiled and driven (one program, a
``lax.scan`` of several, attack blocks checked from the host) is the job of the executor
:mod:`fosc_jax.training.executors` chooses from ``config.executor``; every executor runs the
functions here, so the numbers do not depend on the choice.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import Array

from fosc_jax import parallel
from fosc_jax.attacks import AttackResult, LoopState, PGDLoop
from fosc_jax.classifier import Classifier
from fosc_jax.data import get_augment, to_float
from fosc_jax.defenses import AttackSettings, get_defense
from fosc_jax.models import get_model
from fosc_jax.training import executors
from fosc_jax.training.train_state import TrainState, make_optimizer


def _dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


class Trainer:
    """Model, optimizer, mesh and the step's maths for one config, with the executor that
    ``config.executor`` names (``auto``: :func:`executors.resolve` picks it once here).

    :meth:`run_steps` and :meth:`step` hand the work to that executor.
    """

    def __init__(self, config: ml_collections.ConfigDict, input_shape: tuple,
                 num_classes: int, steps_per_epoch: int = 1, mesh=None):
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
        self.executor = executors.build(
            self, executors.resolve(config.get("executor", "auto"), jax.default_backend(),
                                    config.attack.bn_mode))

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

    # -- running steps (the executor's job) ----------------------------------------------
    def run_steps(self, state: TrainState, x_train: Array, y_train: Array, indices: Array,
                  settings: AttackSettings):
        """One step per row of ``indices`` [n, B] into the on-device split; metrics stacked
        on a leading axis [n, ...], still on device. Donates ``state``."""
        return self.executor.run(state, x_train, y_train, indices, settings)

    def step(self, state: TrainState, x_uint8: Array, y: Array, settings: AttackSettings):
        """One step on a batch of uint8 images; returns (state, metrics). Donates ``state``."""
        return self.executor.step(state, x_uint8, y, settings)

    # -- the step's maths (traced) -------------------------------------------------------
    def attack_logits_fn(self, params, batch_stats):
        """Logits the attack differentiates: BN in train mode (batch stats, updates dropped)
        or inference mode, as config.attack.bn_mode says. Weights are constants here."""
        variables = jax.lax.stop_gradient({"params": params, "batch_stats": batch_stats})
        if self.config.attack.bn_mode == "train":
            return lambda x: self.model.apply(variables, x, train=True,
                                              mutable=["batch_stats"])[0]
        return lambda x: self.model.apply(variables, x, train=False)

    def prepare(self, state: TrainState, x_uint8: Array, y: Array):
        """Place the batch, augment it; returns (x in [0, 1], int labels, attack key)."""
        x_uint8 = parallel.constrain_batch(x_uint8, self.mesh)
        y = parallel.constrain_batch(jnp.asarray(y, jnp.int32), self.mesh)
        aug_key, attack_key = jax.random.split(jax.random.fold_in(state.key, state.step))
        return self.augment(aug_key, to_float(x_uint8)), y, attack_key

    def clean_logits(self, state: TrainState, x: Array) -> Optional[Array]:
        """The clean prediction the defense's attack loss needs (None if it needs none)."""
        if not self.defense.needs_clean_logits:
            return None
        return self.attack_logits_fn(state.params, state.batch_stats)(x)

    def attack_loop(self, state: TrainState, x: Array, y: Array, key: Array,
                    settings: AttackSettings, clean_logits: Optional[Array] = None,
                    origin: Optional[Array] = None) -> PGDLoop:
        """The defense's attack on this batch: its settings, ascending its attack loss
        (``origin``: the FOSC origin of a batch whose start was drawn earlier)."""
        logits_fn = self.attack_logits_fn(state.params, state.batch_stats)
        if clean_logits is None:
            clean_logits = self.clean_logits(state, x)
        eps = self.config.attack.eps if settings.eps is None else settings.eps
        return PGDLoop(logits_fn, x, y, key, eps=eps, step_size=settings.step_size,
                       max_steps=settings.max_steps, budget=settings.budget,
                       threshold=settings.threshold, random_start=settings.random_start,
                       loss=self.defense.attack_loss(clean_logits),
                       fosc_origin=settings.fosc_origin, start_std=settings.start_std,
                       origin=origin)

    def first_attack_step(self, state: TrainState, x: Array, y: Array, key: Array,
                          settings: AttackSettings, clean: Optional[Array]) -> LoopState:
        """The loop's start point and its first step (every example with a budget takes it)."""
        loop = self.attack_loop(state, x, y, key, settings, clean)
        return loop.step(loop.init())

    def train_step(self, state: TrainState, x_uint8: Array, y: Array,
                   settings: AttackSettings, exit_block: Optional[int] = None):
        """One whole step on a batch of uint8 images: augment, attack, update. With
        ``exit_block`` k and an attack that may stop early, the attack is a while_loop over
        blocks of k steps that exits once no example is active; else all steps unrolled
        (stopped examples masked). Returns (state, metrics)."""
        x, y, key = self.prepare(state, x_uint8, y)
        if settings.max_steps == 0:
            return self.update(state, x, y, None, settings)
        loop = self.attack_loop(state, x, y, key, settings)
        s = loop.step(loop.init())  # the first step is always taken
        if settings.early_exit and exit_block is not None:
            s = loop.run_blocks(s, exit_block)
        else:
            s = loop.steps(s, settings.max_steps - 1)
        return self.update(state, x, y, loop.result(s), settings)

    def update(self, state: TrainState, x: Array, y: Array, result: Optional[AttackResult],
               settings: AttackSettings):
        """The optimizer step on the defense's training loss (the clean batch stands in
        for x_adv when there is no attack). Returns (state, metrics): means, a finiteness
        flag and per-example FOSC / steps / loss."""
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
