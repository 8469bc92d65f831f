"""FOSC, the first-order stationary condition of the inner maximisation (Wang et al. 2019).

For one example with clean input x0, iterate x and loss gradient g at x:

    c(x) = max_{x' in B(x0, eps)} <x' - x, g> = eps * ||g||_1 - <x - x0, g>

Smaller is better converged; c >= 0 whenever x lies in the ball. Everything here is per
example: sums run over all non-batch axes and the result has shape [B]. Values are computed
in float32 even for low-precision inputs, because the criterion is a small difference of
large sums.
"""
from __future__ import annotations

from typing import Union

import jax.numpy as jnp
from jax import Array

from fosc_jax._checks import check_eps, check_same_shape

Scalar = Union[float, Array]


def _per_example_eps(eps: Scalar, batch: int) -> Array:
    """Broadcast a scalar or per-example eps to shape [B] in float32."""
    return jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (batch,))


def _flatten(a: Array) -> Array:
    return jnp.reshape(a, (a.shape[0], -1)).astype(jnp.float32)


def fosc(grad: Array, delta: Array, eps: Scalar) -> Array:
    """FOSC per example: ``eps * ||g||_1 - <delta, g>`` over all non-batch axes.

    Args:
      grad: loss gradient at the iterate, shape [B, ...].
      delta: iterate minus the clean input (x - x0), same shape as ``grad``.
      eps: radius of the L-inf ball, a scalar or one value per example (shape [B]).
    Returns:
      float32 array of shape [B].
    """
    check_same_shape("delta", delta, "grad", grad)
    batch = grad.shape[0]
    eps = check_eps(eps, batch)
    g = _flatten(grad)
    d = _flatten(delta)
    return _per_example_eps(eps, batch) * jnp.sum(jnp.abs(g), axis=1) - jnp.sum(d * g, axis=1)


def fosc_box(grad: Array, x: Array, x0: Array, eps: Scalar, lo: float = 0.0,
             hi: float = 1.0) -> Array:
    """FOSC with the maximum taken over the ball intersected with the box [lo, hi].

    Per coordinate the feasible interval is [max(x0 - eps, lo), min(x0 + eps, hi)], and the
    linear objective is maximised at its upper end where g > 0 and its lower end otherwise.
    Never larger than :func:`fosc`; equal when the box does not cut the ball.
    """
    check_same_shape("x", x, "grad", grad)
    check_same_shape("x0", x0, "grad", grad)
    if not hi > lo:
        raise ValueError(f"fosc_box needs lo < hi, got lo={lo}, hi={hi}.")
    batch = grad.shape[0]
    eps = _per_example_eps(check_eps(eps, batch), batch)[:, None]
    g, xf, x0f = _flatten(grad), _flatten(x), _flatten(x0)
    upper = jnp.minimum(x0f + eps, hi)
    lower = jnp.maximum(x0f - eps, lo)
    gain = jnp.maximum((upper - xf) * g, (lower - xf) * g)
    return jnp.sum(gain, axis=1)
