"""Per-example losses that attacks maximise. Each returns float32 of shape [B]."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from fosc_jax._checks import check_labels, check_logits


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Softmax cross-entropy of each example against its integer label."""
    num_classes = check_logits(logits, logits.shape[0] if jnp.ndim(logits) else 0)
    check_labels(labels, logits.shape[0], num_classes, name="labels")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def cw_margin(logits: Array, labels: Array, kappa: float = 50.0) -> Array:
    """Carlini-Wagner margin loss ``-relu(z_y - max_{j != y} z_j + kappa)``.

    The true class is removed from the max by setting it to -inf (exact), not by
    multiplying by zero, which would let a negative logit win the max.
    """
    num_classes = check_logits(logits, logits.shape[0] if jnp.ndim(logits) else 0)
    check_labels(labels, logits.shape[0], num_classes, name="labels")
    z = logits.astype(jnp.float32)
    is_true = jax.nn.one_hot(labels, num_classes, dtype=bool)
    z_true = jnp.sum(jnp.where(is_true, z, 0.0), axis=-1)
    z_other = jnp.max(jnp.where(is_true, -jnp.inf, z), axis=-1)
    return -jax.nn.relu(z_true - z_other + kappa)


LOSSES = {"ce": cross_entropy, "cw": cw_margin}


def get_loss(name: str):
    """Look up an attack loss by name ("ce" or "cw")."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}.")
    return LOSSES[name]
