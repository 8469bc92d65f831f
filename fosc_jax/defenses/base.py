"""The defense boundary: :class:`AttackSettings` and the :class:`Defense` base class.

A defense supplies everything defense-specific to the one shared training step:

- the attack of an epoch (:meth:`Defense.attack_settings`: budget, step, eps, FOSC threshold,
  start, FOSC origin),
- the objective that attack ascends (:meth:`Defense.attack_loss`),
- the outer training loss and the example weights (:meth:`Defense.training_loss`,
  :meth:`Defense.example_weights`),
- state carried across epochs (:meth:`Defense.init_state`, :meth:`Defense.end_epoch`),
- what is logged each epoch (:meth:`Defense.describe`).

The step calls these hooks and knows no defense by name. Hooks marked *traced* run inside
``jax.jit``; the others run on the host once per epoch.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import Array

from fosc_jax import schedules
from fosc_jax.errors import ConfigError
from fosc_jax.losses import AttackLoss, cross_entropy

# forward(x, batch_stats) -> (logits, batch_stats): the model in training mode with the
# parameters being differentiated; BatchNorm statistics are threaded through explicitly.
Forward = Callable[[Array, Any], tuple]
# probe(num_steps, step_fraction) -> (clean accuracy, PGD accuracy) on held-out data.
Probe = Callable[[int, float], tuple]


@flax.struct.dataclass
class AttackSettings:
    """The attack for one epoch. Arrays are traced (no recompiles as they change); the
    static fields select the compiled program (max_steps 0 means no attack)."""
    threshold: Array          # f32 scalar, FOSC level c_t
    budget: Array             # int32 [B], steps each example may take
    step_size: Array          # f32 [B]
    eps: Array = None         # f32 scalar, the ball's radius (None: config.attack.eps)
    max_steps: int = flax.struct.field(pytree_node=False, default=10)
    random_start: bool = flax.struct.field(pytree_node=False, default=True)
    # None: uniform start in the ball; a float s: x0 + s * N(0, 1) (TRADES uses 0.001).
    start_std: Optional[float] = flax.struct.field(pytree_node=False, default=None)
    # True when examples can stop before their budget (a FOSC threshold): the step then
    # checks for "nobody active" and skips the remaining steps (Dynamic AT's saving).
    early_exit: bool = flax.struct.field(pytree_node=False, default=False)
    fosc_origin: str = flax.struct.field(pytree_node=False, default="clean")


def make_settings(batch: int, *, eps: float, threshold: float, budget, step: float,
                  max_steps: int, random_start: bool, early_exit: bool = False,
                  start_std: Optional[float] = None, fosc_origin: str = "clean"
                  ) -> AttackSettings:
    """AttackSettings with scalars broadcast to the batch (``budget``: scalar or [B])."""
    return AttackSettings(
        threshold=jnp.float32(threshold), eps=jnp.float32(eps),
        budget=jnp.broadcast_to(jnp.asarray(budget, jnp.int32), (batch,)),
        step_size=jnp.full((batch,), step, jnp.float32),
        max_steps=int(max_steps), random_start=bool(random_start), start_std=start_std,
        early_exit=bool(early_exit), fosc_origin=fosc_origin)


def configured_step_size(config: ml_collections.ConfigDict) -> float:
    """The attack step: ``config.attack.step_size``, or eps / 4 (the paper's default)."""
    step = config.attack.step_size
    return step if step is not None else config.attack.eps / 4


class Defense:
    """A defense: the hooks the training step calls. Subclasses override what differs.

    The default is Standard adversarial training (Madry et al.): PGD-K from a uniform
    random start on the cross-entropy, then the cross-entropy on the adversarial batch.
    """

    name: ClassVar[str] = ""     # config.defense.name
    label: ClassVar[str] = ""    # the row label in results tables

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # -- configuration (host) ------------------------------------------------------------
    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        """Check this defense's own config fields; raise ConfigError saying how to fix."""

    # -- the attack of an epoch (host) ---------------------------------------------------
    def pgd_settings(self, batch: int, **overrides) -> AttackSettings:
        """PGD-K with the configured eps, step (eps/4 by default) and start."""
        attack = self.config.attack
        k = int(attack.num_steps)
        kwargs = dict(eps=attack.eps, threshold=-np.inf, budget=k,
                      step=configured_step_size(self.config), max_steps=k,
                      random_start=attack.random_start,
                      fosc_origin=self.config.defense.fosc_origin)
        return make_settings(batch, **{**kwargs, **overrides})

    def attack_settings(self, epoch: int, batch: int, state: Any) -> AttackSettings:
        """The attack used in ``epoch`` (0-based) on a global batch of ``batch``; ``state``
        is this defense's cross-epoch state on the host."""
        return self.pgd_settings(batch)

    # -- objectives (traced) -------------------------------------------------------------
    needs_clean_logits: ClassVar[bool] = False  # attack_loss uses the clean prediction

    def attack_loss(self, clean_logits: Optional[Array]) -> AttackLoss:
        """The per-example objective the attack ascends (``clean_logits`` is given, in the
        attack's BatchNorm mode and constant, when ``needs_clean_logits``)."""
        return cross_entropy

    def training_loss(self, forward: Forward, batch_stats: Any, x: Array, x_adv: Array,
                      y: Array, result: Any) -> tuple:
        """Per-example outer loss [B], the logits on ``x_adv`` and the new BatchNorm
        statistics. ``result`` is the AttackResult (None without an attack)."""
        logits, batch_stats = forward(x_adv, batch_stats)
        return cross_entropy(logits, y), logits, batch_stats

    def example_weights(self, inference_logits: Callable[[Array], Array], x_adv: Array,
                        y: Array, epoch: Array, attacked: bool) -> Array:
        """Weights of the per-example outer loss (mean 1). With
        ``config.defense.loss_weighting`` (the authors' released code) each example is
        weighted by its adversarial cross-entropy in inference mode from epoch 1 on."""
        ones = jnp.ones(y.shape, jnp.float32)
        if not (self.config.defense.loss_weighting and attacked):
            return ones
        adv_ce = cross_entropy(inference_logits(x_adv), y)
        w = jax.lax.stop_gradient(adv_ce / jnp.maximum(jnp.mean(adv_ce), 1e-12))
        return jnp.where(epoch >= 1, w, ones)

    # -- state across epochs (host) ------------------------------------------------------
    def init_state(self) -> dict:
        """The cross-epoch state of a fresh run (a dict of scalars; saved in checkpoints)."""
        return {}

    def end_epoch(self, state: dict, epoch: int, probe: Probe) -> dict:
        """The state after ``epoch`` (0-based); ``probe`` measures held-out accuracy."""
        return state

    def describe(self, epoch: int, state: dict) -> dict:
        """The schedule values logged per epoch (None where they do not apply)."""
        return {"c_t": None, "curriculum_k": None}


class DynamicSchedule:
    """Mixin for defenses that stop each example once FOSC <= c_t (linear schedule)."""

    config: ml_collections.ConfigDict

    def threshold(self, epoch: int) -> float:
        d = self.config.defense
        return schedules.fosc_threshold(epoch, d.c_max, d.t_prime)

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        d = config.defense
        if not 0 < d.t_prime <= config.num_epochs:
            raise ConfigError(
                f"config.defense.t_prime = {d.t_prime!r} is invalid: must satisfy 0 < T' <= "
                f"num_epochs ({config.num_epochs}); to shorten a run with its schedule scaled, "
                "use train.py --epochs=N.")

    def describe(self, epoch: int, state: dict) -> dict:
        return {"c_t": self.threshold(epoch), "curriculum_k": None}
