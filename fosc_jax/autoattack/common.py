"""Shared pieces of the AutoAttack attacks: the result pytree, input checks, target classes."""
from __future__ import annotations

from typing import Callable, Optional, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from fosc_jax.attacks import _validate

LogitsFn = Callable[[Array], Array]
Scalar = Union[float, Array]


@flax.struct.dataclass
class AutoAttackResult:
    """What every AutoAttack component returns (a pytree, so it passes through jit).

    Attributes:
      x_adv: [B, ...] the adversarial input where one was found, else the clean input; always
        inside the eps-ball and [0, 1].
      robust: [B] bool, True iff the clean input is classified correctly and the attack found
        no misclassified point within eps (the robust-accuracy indicator).
      iterations: scalar int32, loop iterations (gradient steps, or queries for Square) the
        batch ran, summed over restarts and target classes; below the nominal count when the
        early exit fired because every example was already misclassified.
      distance: [B] float32 L-inf norm of the smallest adversarial perturbation found (FAB
        only; inf where none was found), else None.
      x_best: [B, ...] APGD only: each example's highest-loss iterate of the last run that
        attacked it (the point APGD restarts from; for a robust example, where the attack
        ended), else None. The convergence report takes its FOSC there.
    """
    x_adv: Array
    robust: Array
    iterations: Array
    distance: Optional[Array] = None
    x_best: Optional[Array] = None


def per_example(value: Scalar, batch: int, ndim: int) -> Array:
    """Scalar or [B] setting -> float32 [B, 1, ..., 1] that broadcasts against inputs."""
    v = jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch,))
    return v.reshape((batch,) + (1,) * (ndim - 1))


def check_int(value, name: str, low: int = 1) -> int:
    """An int setting (static under jit) that must be >= ``low``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    return int(value)


def validate(logits_fn: LogitsFn, x0: Array, y: Array, eps: Scalar, num_steps: int) -> int:
    """Shape/value checks shared with the PGD attacks; returns the number of classes."""
    _validate(logits_fn, x0, y, eps, 1.0, num_steps, None)
    out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x0.shape, jnp.float32))
    return int(out.shape[-1])


def check_num_targets(num_targets: int, num_classes: int, name: str) -> int:
    """Targeted attacks aim at the 2nd..(num_targets+1)-th most likely classes."""
    check_int(num_targets, f"{name} num_targets")
    if num_targets > num_classes - 1:
        raise ValueError(f"{name}: num_targets={num_targets} exceeds the {num_classes - 1} "
                         f"other classes; use at most num_classes - 1.")
    return num_targets


def target_of_rank(clean_logits: Array, rank: Array) -> Array:
    """The class with the ``rank``-th largest clean logit [B] (rank 2 = runner-up).

    AutoAttack's targeted attacks take the targets from the clean point's ranking, once.
    """
    order = jnp.argsort(clean_logits, axis=-1)  # ascending
    idx = clean_logits.shape[-1] - jnp.asarray(rank, jnp.int32)
    return jnp.take_along_axis(order, jnp.broadcast_to(idx, order.shape[:1])[:, None],
                               axis=-1)[:, 0].astype(jnp.int32)


def uniform(key: Array, shape: tuple, low: float = 0.0, high: float = 1.0) -> Array:
    """U(low, high) of ``shape`` from ``key``, drawn with JAX's "rbg" generator.

    Same key, same numbers; but XLA:CPU compiles threefry over an image-sized shape in
    2-3 s per program (RBG: under 0.5 s), and every attack here draws inside its loops.
    """
    seed = jax.random.bits(key, (), jnp.uint32)
    return jax.random.uniform(jax.random.key(seed, impl="rbg"), shape, jnp.float32, low, high)


def random_signs(key: Array, shape: tuple) -> Array:
    """+1 or -1 with probability 1/2 each (see :func:`uniform`)."""
    return jnp.where(uniform(key, shape) < 0.5, 1.0, -1.0)


__all__ = ["AutoAttackResult", "LogitsFn", "per_example", "check_int", "validate",
           "check_num_targets", "target_of_rank", "uniform", "random_signs"]
