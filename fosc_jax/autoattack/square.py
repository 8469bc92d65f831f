"""Square Attack (Andriushchenko et al., ECCV 2020), L-inf: AutoAttack's gradient-free member.

Square only queries the logits, so it cannot be fooled by broken gradients; that is why it is
in AutoAttack and why its success where gradient attacks failed signals gradient masking.

It starts from vertical stripes (each column and channel shifted by +-eps), then, per query,
proposes to set one random square window of side s to x0 +- eps (one random sign per channel)
and keeps the proposal if it lowers the margin z_y - max_{j != y} z_j. The window's area
shrinks with the query index i as p(i) * H * W, p halving at i = 10, 50, 200, 500, 1000,
2000, 4000, 6000, 8000 from p_init = 0.8 (the reference schedule; AutoAttack uses it
unrescaled for its 5,000 queries, ``rescale_schedule=True`` stretches it over fewer queries).

As in the original paper's code the window position and signs are drawn per example (the
AutoAttack port draws one per batch), so an example's attack does not depend on its batch.
The loop is one ``lax.while_loop`` that exits once every example is misclassified; a
misclassified example stops changing.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from fosc_jax.autoattack.common import (AutoAttackResult, LogitsFn, Scalar, check_int,
                                        per_example, random_signs, uniform, validate)
from fosc_jax.autoattack.dlr import margin

SCHEDULE_ITERS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(i: Array, num_queries: int, p_init: float, rescale: bool) -> Array:
    """p(i): the fraction of pixels the i-th proposal's window covers (reference schedule)."""
    it = jnp.asarray(i, jnp.int32)
    if rescale:
        it = (it.astype(jnp.float32) / num_queries * 10000).astype(jnp.int32)
    halvings = jnp.sum(it > jnp.asarray(SCHEDULE_ITERS, jnp.int32))
    return p_init / 2.0 ** halvings.astype(jnp.float32)


def square(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
           num_queries: int = 5000, p_init: float = 0.8,
           rescale_schedule: bool = False) -> AutoAttackResult:
    """Square Attack on the margin loss with ``num_queries`` proposals after the stripes.

    ``x0`` must be NHWC images [B, H, W, C] in [0, 1]. Only examples classified correctly at
    ``x0`` are attacked. ``iterations`` counts proposals made (the early exit included).
    """
    validate(logits_fn, x0, y, eps, num_queries)
    if jnp.ndim(x0) != 4:
        raise ValueError(f"square needs NHWC images [B, H, W, C], got shape {jnp.shape(x0)}.")
    if not 0.0 < float(p_init) <= 1.0:
        raise ValueError(f"p_init must lie in (0, 1], got {p_init}.")
    check_int(num_queries, "num_queries")
    x0 = jax.lax.stop_gradient(jnp.asarray(x0, jnp.float32))
    y = jnp.asarray(y, jnp.int32)
    batch, h, w, c = x0.shape
    eps_b = per_example(eps, batch, 4)
    lower, upper = jnp.maximum(x0 - eps_b, 0.0), jnp.minimum(x0 + eps_b, 1.0)
    robust0 = jnp.argmax(logits_fn(x0), axis=-1).astype(jnp.int32) == y

    key_init, key_loop = jax.random.split(key)
    x_best = jnp.clip(x0 + eps_b * random_signs(key_init, (batch, 1, w, c)), lower, upper)
    margin_best = margin(logits_fn(x_best), y)
    rows = jnp.arange(h)[None, :, None, None]
    cols = jnp.arange(w)[None, None, :, None]

    def body(s):
        i = s["i"]
        p = square_fraction(i, num_queries, float(p_init), rescale_schedule)
        side = jnp.maximum(jnp.round(jnp.sqrt(p * h * w)).astype(jnp.int32), 1)
        side = jnp.minimum(side, min(h, w))
        k_pos, k_sign = jax.random.split(jax.random.fold_in(key_loop, i))
        u = uniform(k_pos, (2, batch))
        top = jnp.floor(u[0] * (h - side)).astype(jnp.int32)[:, None, None, None]
        left = jnp.floor(u[1] * (w - side)).astype(jnp.int32)[:, None, None, None]
        window = ((rows >= top) & (rows < top + side) & (cols >= left)
                  & (cols < left + side))
        proposal = jnp.where(window, s["x"] + 2.0 * eps_b * random_signs(k_sign, (batch, 1, 1, c)),
                             s["x"])
        proposal = jnp.clip(proposal, lower, upper)
        m = margin(logits_fn(proposal), y)
        active = robust0 & (s["margin"] > 0)
        take = active & ((m < s["margin"]) | (m <= 0))
        return dict(i=i + 1, x=jnp.where(take[:, None, None, None], proposal, s["x"]),
                    margin=jnp.where(take, m, s["margin"]))

    def cond(s):
        return (s["i"] < num_queries) & jnp.any(robust0 & (s["margin"] > 0))

    final = jax.lax.while_loop(cond, body, dict(i=jnp.int32(0), x=x_best, margin=margin_best))
    wrong = jnp.argmax(logits_fn(final["x"]), axis=-1).astype(jnp.int32) != y
    fooled = robust0 & wrong
    x_adv = jnp.where(fooled[:, None, None, None], final["x"], x0)
    return AutoAttackResult(x_adv=jax.lax.stop_gradient(x_adv), robust=robust0 & ~wrong,
                            iterations=final["i"])


__all__ = ["square", "square_fraction", "SCHEDULE_ITERS"]
