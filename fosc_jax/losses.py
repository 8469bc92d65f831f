"""Per-example losses as plain functions. Each returns float32 of shape [B].

An attack ascends an *attack loss*: any function ``(logits [B, C], labels [B]) -> [B]``
(:data:`AttackLoss`). Cross-entropy and the CW margin are looked up by name in
:data:`LOSSES` (``get_loss("cw", kappa=50)``); a loss that needs more than the labels, such
as TRADES' KL to the clean prediction, is built by a factory (:func:`kl_to_clean`) and
passed to the attack as a function.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import Array

from fosc_jax._checks import check_labels, check_logits, check_same_shape

AttackLoss = Callable[[Array, Array], Array]


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


def kl_divergence(p_logits: Array, q_logits: Array) -> Array:
    """``KL(softmax(p) || softmax(q))`` per example, from logits (log-sum-exp stable)."""
    check_logits(p_logits, p_logits.shape[0] if jnp.ndim(p_logits) else 0, name="p_logits")
    check_same_shape("q_logits", q_logits, "p_logits", p_logits)
    logp = jax.nn.log_softmax(p_logits.astype(jnp.float32), axis=-1)
    logq = jax.nn.log_softmax(q_logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def kl_to_clean(clean_logits: Array) -> AttackLoss:
    """TRADES' inner objective: ``(logits, labels) -> KL(f(x) || f(x'))`` per example, with
    the clean prediction ``f(x)`` held constant (the labels are not used)."""
    target = jax.lax.stop_gradient(clean_logits)

    def loss(logits: Array, labels: Array) -> Array:  # noqa: ARG001 - the AttackLoss shape
        return kl_divergence(target, logits)
    return loss


LOSSES: dict[str, AttackLoss] = {"ce": cross_entropy, "cw": cw_margin}


def get_loss(name: str, **params) -> AttackLoss:
    """The attack loss registered as ``name`` ("ce", "cw"), its keyword ``params`` bound
    (``get_loss("cw", kappa=20.0)``)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}.")
    return functools.partial(LOSSES[name], **params) if params else LOSSES[name]


def resolve_loss(loss, kappa: float = 50.0) -> AttackLoss:
    """An attack's ``loss`` argument as a function: a registered name ("cw" takes
    ``kappa``) or an :data:`AttackLoss` used as given."""
    if callable(loss):
        return loss
    return get_loss(loss, kappa=kappa) if loss == "cw" else get_loss(loss)
