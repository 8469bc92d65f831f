"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020b), L-inf.

FAB looks for the adversarial point closest to x0 rather than the highest loss. Each step
linearises the targeted margin f(x) = z_t(x) - z_y(x) at the current point x1, projects both
x1 and x0 onto the linearised boundary {f = 0} inside the box [0, 1]^d (the smallest L-inf
move, :func:`project_linf`), and mixes the two moves with weight alpha = min(|d1| / (|d1| +
|d2|), alpha_max), overshooting by eta. Once a point is misclassified its distance is recorded
(the smallest so far wins) and it is pulled back towards x0 by beta. The attack succeeds on an
example when the smallest adversarial perturbation found is at most eps.

AutoAttack's settings (reference implementation): 100 steps, alpha_max = 0.1, eta = 1.05,
beta = 0.9, targets = the 2nd..10th most likely clean classes, one run each, the first run of
each target starting at x0 (later restarts from a random point at half eps).

Early exit: an example leaves the loop once it has an adversarial point within eps (further
steps could only shrink its distance, not change the verdict), and the loop stops when no
example is left.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from fosc_jax.autoattack.common import (AutoAttackResult, LogitsFn, Scalar, check_int,
                                        check_num_targets, per_example, target_of_rank,
                                        uniform, validate)


def project_linf(t: Array, w: Array, b: Array) -> Array:
    """Smallest L-inf move onto a hyperplane inside the unit box, per row.

    For each row: the d minimising max|d_i| subject to w . (t + d) = b and 0 <= t + d <= 1.
    Moving every coordinate towards the hyperplane by min(lam, room_i) changes w . x by
    g(lam) = sum_i |w_i| min(lam, room_i), a concave piecewise-linear function; lam is found
    exactly from its values at the sorted breakpoints. If even the box corner does not reach
    the hyperplane, that corner (the closest feasible approach) is returned.

    Args: t [B, D] points in [0, 1]; w [B, D] normals; b [B] offsets. Returns d [B, D].
    """
    gap = jnp.sum(w * t, axis=1) - b
    w = w * jnp.where(gap >= 0, 1.0, -1.0)[:, None]  # now w . x must decrease by |gap|
    need = jnp.abs(gap)
    direction = -jnp.sign(w)
    room = jnp.where(w > 0, t, 1.0 - t)
    aw = jnp.abs(w)
    order = jnp.argsort(room, axis=1)
    room_s = jnp.take_along_axis(room, order, axis=1)
    aw_s = jnp.take_along_axis(aw, order, axis=1)
    before = jnp.cumsum(aw_s * room_s, axis=1) - aw_s * room_s  # sum_{j<k} |w_j| room_j
    after = jnp.sum(aw_s, axis=1, keepdims=True) - (jnp.cumsum(aw_s, axis=1) - aw_s)
    at_breaks = before + room_s * after  # g at lam = room_s[k]
    k = jnp.sum(at_breaks < need[:, None], axis=1)
    feasible = k < t.shape[1]
    kc = jnp.minimum(k, t.shape[1] - 1)[:, None]
    c_k = jnp.take_along_axis(before, kc, axis=1)[:, 0]
    s_k = jnp.take_along_axis(after, kc, axis=1)[:, 0]
    lam = jnp.where(s_k > 0, (need - c_k) / jnp.where(s_k > 0, s_k, 1.0), 0.0)
    lam = jnp.where(feasible, jnp.maximum(lam, 0.0), jnp.inf)
    return direction * jnp.minimum(lam[:, None], room)


def _single_run(logits_fn: LogitsFn, x0: Array, y: Array, target: Array, key: Array,
                eps_b: Array, active: Array, random_start: bool, num_steps: int,
                alpha_max: float, eta: float, beta: float):
    """One FAB-T run; returns (smallest adversarial L-inf distance [B], that point, steps)."""
    batch, shape = x0.shape[0], x0.shape
    flat0 = x0.reshape(batch, -1)
    eps_flat = eps_b.reshape(batch, 1)

    def margin_grad(x):
        def total(x):
            z = logits_fn(x)
            f = (jnp.take_along_axis(z, target[:, None], axis=1)
                 - jnp.take_along_axis(z, y[:, None], axis=1))[:, 0]
            return jnp.sum(f), f
        (_, f), g = jax.value_and_grad(total, has_aux=True)(x)
        return f, g.reshape(batch, -1)

    if random_start:
        t = uniform(key, flat0.shape, -1.0, 1.0)
        t = t / (jnp.max(jnp.abs(t), axis=1, keepdims=True) + 1e-12)
        start = jnp.clip(flat0 + 0.5 * eps_flat * t, 0.0, 1.0)
    else:
        start = flat0
    init = dict(i=jnp.int32(0), x1=start, best=jnp.full((batch,), jnp.inf, jnp.float32),
                adv=flat0)

    def body(s):
        x1 = s["x1"]
        f, g = margin_grad(x1.reshape(shape))
        offset = jnp.sum(g * x1, axis=1) - f  # linearised boundary: g . x = offset
        both = project_linf(jnp.concatenate([x1, flat0]), jnp.concatenate([g, g]),
                            jnp.concatenate([offset, offset]))
        d1, d2 = both[:batch], both[batch:]
        a1 = jnp.maximum(jnp.max(jnp.abs(d1), axis=1, keepdims=True), 1e-8)
        a2 = jnp.maximum(jnp.max(jnp.abs(d2), axis=1, keepdims=True), 1e-8)
        alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)
        x_new = jnp.clip((x1 + eta * d1) * (1 - alpha) + (flat0 + eta * d2) * alpha, 0.0, 1.0)
        is_adv = jnp.argmax(logits_fn(x_new.reshape(shape)), axis=-1).astype(jnp.int32) != y
        dist = jnp.max(jnp.abs(x_new - flat0), axis=1)
        better = is_adv & (dist < s["best"])
        pulled_back = jnp.where(is_adv[:, None], flat0 + (x_new - flat0) * beta, x_new)
        return dict(i=s["i"] + 1, x1=pulled_back, best=jnp.where(better, dist, s["best"]),
                    adv=jnp.where(better[:, None], x_new, s["adv"]))

    def cond(s):
        return (s["i"] < num_steps) & jnp.any(active & (s["best"] > eps_flat[:, 0]))

    final = jax.lax.while_loop(cond, body, init)
    return final["best"], final["adv"].reshape(shape), final["i"]


def fab_t(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
          num_steps: int = 100, num_targets: int = 9, num_restarts: int = 1,
          alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9) -> AutoAttackResult:
    """FAB-T: targeted FAB against the 2nd..(num_targets+1)-th most likely clean classes.

    Only examples classified correctly at ``x0`` are attacked; target class j (and each
    restart) runs only on examples still robust. ``distance`` in the result is the smallest
    adversarial L-inf perturbation found over all runs (inf where none).
    """
    num_classes = validate(logits_fn, x0, y, eps, num_steps)
    check_num_targets(num_targets, num_classes, "FAB-T")
    check_int(num_restarts, "num_restarts")
    if not (0 < alpha_max <= 1 and eta >= 1 and 0 < beta < 1):
        raise ValueError(f"FAB needs 0 < alpha_max <= 1, eta >= 1 and 0 < beta < 1, got "
                         f"alpha_max={alpha_max}, eta={eta}, beta={beta}.")
    x0 = jax.lax.stop_gradient(jnp.asarray(x0, jnp.float32))
    y = jnp.asarray(y, jnp.int32)
    batch = x0.shape[0]
    eps_b = per_example(eps, batch, x0.ndim)
    clean_logits = logits_fn(x0)
    robust0 = jnp.argmax(clean_logits, axis=-1).astype(jnp.int32) == y

    def runs(random_start: bool):
        def run(s):
            r = s["r"]
            target = target_of_rank(clean_logits, 2 + r // num_restarts)
            best, adv, steps = _single_run(
                logits_fn, x0, y, target, jax.random.fold_in(key, r), eps_b, s["robust"],
                random_start, num_steps, float(alpha_max), float(eta), float(beta))
            found = s["robust"] & (best <= eps_b.reshape(batch))
            bmask = found.reshape((-1,) + (1,) * (x0.ndim - 1))
            return dict(r=r + 1, robust=s["robust"] & ~found,
                        x_adv=jnp.where(bmask, adv, s["x_adv"]),
                        dist=jnp.minimum(s["dist"], jnp.where(s["robust"], best, jnp.inf)),
                        iters=s["iters"] + steps)
        return run

    # Restart 0 of every target starts at x0, later ones at random: two loops, same body.
    state = dict(r=jnp.int32(0), robust=robust0, x_adv=x0,
                 dist=jnp.full((batch,), jnp.inf, jnp.float32), iters=jnp.int32(0))
    num_runs = num_targets * num_restarts
    if num_restarts == 1:
        state = jax.lax.while_loop(lambda s: (s["r"] < num_runs) & jnp.any(s["robust"]),
                                   runs(False), state)
    else:
        first, later = runs(False), runs(True)
        state = jax.lax.while_loop(
            lambda s: (s["r"] < num_runs) & jnp.any(s["robust"]),
            lambda s: jax.lax.cond(s["r"] % num_restarts == 0, first, later, s), state)
    return AutoAttackResult(x_adv=jax.lax.stop_gradient(state["x_adv"]),
                            robust=state["robust"], iterations=state["iters"],
                            distance=state["dist"])


__all__ = ["fab_t", "project_linf"]
