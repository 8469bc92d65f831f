"""The DLR losses of AutoAttack (Croce & Hein, ICML 2020, eqs. 5 and 6), per example.

DLR is the margin ``z_y - max_{j != y} z_j`` divided by the spread of the top logits, so it is
invariant to shifting and rescaling the logits: a model cannot escape it by inflating its
outputs (the failure mode of cross-entropy on saturated softmaxes). With ``pi`` sorting the
logits in decreasing order:

    DLR(z, y)           = -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)
    DLR-T(z, y, t)      = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

Attacks maximise them. Each returns float32 [B].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from fosc_jax._checks import check_labels, check_logits

DLR_EPS = 1e-12


def _sorted_and_true(logits: Array, labels: Array, min_classes: int, name: str):
    num_classes = check_logits(logits, logits.shape[0] if jnp.ndim(logits) else 0)
    if num_classes < min_classes:
        raise ValueError(f"{name} needs at least {min_classes} classes (it reads the "
                         f"{min_classes} largest logits), got {num_classes}.")
    check_labels(labels, logits.shape[0], num_classes, name="labels")
    z = logits.astype(jnp.float32)
    z_sorted = jnp.sort(z, axis=-1)  # ascending: z_sorted[:, -1] is z_pi1
    z_true = jnp.take_along_axis(z, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return z, z_sorted, z_true


def dlr_loss(logits: Array, labels: Array) -> Array:
    """Untargeted DLR loss (maximised by the attack); needs >= 3 classes."""
    z, z_sorted, z_true = _sorted_and_true(logits, labels, 3, "dlr_loss")
    is_true = jax.nn.one_hot(labels, z.shape[-1], dtype=bool)
    z_other = jnp.max(jnp.where(is_true, -jnp.inf, z), axis=-1)
    return -(z_true - z_other) / (z_sorted[:, -1] - z_sorted[:, -3] + DLR_EPS)


def dlr_targeted_loss(logits: Array, labels: Array, targets: Array) -> Array:
    """Targeted DLR loss towards class ``targets`` [B] (maximised); needs >= 4 classes."""
    z, z_sorted, z_true = _sorted_and_true(logits, labels, 4, "dlr_targeted_loss")
    check_labels(targets, z.shape[0], z.shape[-1], name="targets")
    z_target = jnp.take_along_axis(z, targets[:, None].astype(jnp.int32), axis=-1)[:, 0]
    spread = z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4])
    return -(z_true - z_target) / (spread + DLR_EPS)


def margin(logits: Array, labels: Array) -> Array:
    """``z_y - max_{j != y} z_j`` [B]: > 0 iff the example is classified correctly."""
    num_classes = check_logits(logits, logits.shape[0] if jnp.ndim(logits) else 0)
    check_labels(labels, logits.shape[0], num_classes, name="labels")
    z = logits.astype(jnp.float32)
    is_true = jax.nn.one_hot(labels, num_classes, dtype=bool)
    z_true = jnp.sum(jnp.where(is_true, z, 0.0), axis=-1)
    return z_true - jnp.max(jnp.where(is_true, -jnp.inf, z), axis=-1)


__all__ = ["dlr_loss", "dlr_targeted_loss", "margin", "DLR_EPS"]
