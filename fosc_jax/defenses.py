"""Defenses as pure schedules: (config, epoch, state) -> AttackSettings for the masked loop.

Every defense trains with the same step; only the attack settings differ:

| defense    | budget per example        | step size | threshold | random start |
| unsecured  | 0 (no attack)             | -         | -         | -            |
| standard   | K                         | eps/4     | -inf      | yes          |
| dynamic    | K                         | eps/4     | c_t       | yes          |
| curriculum | 0..k across k+1 parts     | 2 eps/k   | -inf      | yes          |
| fgsm_pgd   | 1 (FGSM epochs), then K   | eps, eps/4| -inf      | no, then yes |
"""
from __future__ import annotations

from typing import Optional

import flax.struct
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import Array

from fosc_jax import schedules
from fosc_jax.config import step_size as default_step_size


@flax.struct.dataclass
class AttackSettings:
    """The attack for one epoch. Arrays are traced (no recompiles as they change); the
    static fields select the compiled program (max_steps 0 means no attack)."""
    threshold: Array          # f32 scalar, FOSC level c_t
    budget: Array             # int32 [B], steps each example may take
    step_size: Array          # f32 [B]
    max_steps: int = flax.struct.field(pytree_node=False, default=10)
    random_start: bool = flax.struct.field(pytree_node=False, default=True)
    # True when examples can stop before their budget (a FOSC threshold): the step then
    # checks for "nobody active" and skips the remaining steps (Dynamic AT's saving).
    early_exit: bool = flax.struct.field(pytree_node=False, default=False)


def _settings(batch: int, *, threshold: float, budget, step: float, max_steps: int,
              random_start: bool, early_exit: bool = False) -> AttackSettings:
    return AttackSettings(
        threshold=jnp.float32(threshold),
        budget=jnp.broadcast_to(jnp.asarray(budget, jnp.int32), (batch,)),
        step_size=jnp.full((batch,), step, jnp.float32),
        max_steps=int(max_steps), random_start=bool(random_start),
        early_exit=bool(early_exit))


def curriculum_budget(batch: int, k: int) -> np.ndarray:
    """Split a batch into k + 1 equal parts attacked with PGD-0 .. PGD-k (int32 [B])."""
    return (np.arange(batch) * (k + 1) // batch).astype(np.int32)


def settings_for_epoch(config: ml_collections.ConfigDict, epoch: int, batch: int,
                       curriculum_k: Optional[int] = None) -> AttackSettings:
    """The attack a defense uses in ``epoch`` (0-based) for a global batch of ``batch``."""
    eps, k_max = config.attack.eps, int(config.attack.num_steps)
    alpha = default_step_size(config)
    name = config.defense.name
    pgd = dict(threshold=-np.inf, budget=k_max, step=alpha, max_steps=k_max,
               random_start=config.attack.random_start)
    if name == "unsecured":
        return _settings(batch, threshold=-np.inf, budget=0, step=alpha, max_steps=0,
                         random_start=False)
    if name == "standard":
        return _settings(batch, **pgd)
    if name == "dynamic":
        c_t = schedules.fosc_threshold(epoch, config.defense.c_max, config.defense.t_prime)
        return _settings(batch, **{**pgd, "threshold": c_t, "early_exit": True})
    if name == "fgsm_pgd":
        if epoch < config.defense.fgsm_epochs:
            return _settings(batch, threshold=-np.inf, budget=1, step=eps, max_steps=1,
                             random_start=False)
        return _settings(batch, **pgd)
    if name == "curriculum":
        max_k = int(config.defense.curriculum_max_k)
        k = (schedules.curriculum_level_fixed(epoch, config.num_epochs, max_k)
             if curriculum_k is None else int(curriculum_k))
        # max_steps = k (static): a level compiles once and costs k steps, not K_max.
        return _settings(batch, threshold=-np.inf, budget=curriculum_budget(batch, k),
                         step=2 * eps / max(k, 1), max_steps=k,
                         random_start=config.attack.random_start)
    raise ValueError(f"unknown defense {name!r}")


def describe(config: ml_collections.ConfigDict, epoch: int,
             curriculum_k: Optional[int] = None) -> dict:
    """The schedule values logged per epoch: c_t (dynamic) and k (curriculum), else None."""
    name = config.defense.name
    c_t = (schedules.fosc_threshold(epoch, config.defense.c_max, config.defense.t_prime)
           if name == "dynamic" else None)
    k = None
    if name == "curriculum":
        k = (schedules.curriculum_level_fixed(epoch, config.num_epochs,
                                              int(config.defense.curriculum_max_k))
             if curriculum_k is None else int(curriculum_k))
    return {"c_t": c_t, "curriculum_k": k}
