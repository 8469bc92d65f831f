"""Auto-PGD (Croce & Hein, ICML 2020, Algorithm 1), L-inf: APGD-CE, APGD-DLR and APGD-T.

APGD is PGD without a step-size to tune: it starts at step 2 * eps from a random point of the
eps-ball, adds momentum 0.75, and at checkpoints w_j halves an example's step (and restarts it
from its best point so far) when (1) its loss rose in at most rho = 0.75 of the steps since
the last checkpoint, or (2) its step was not halved at the last checkpoint and its best loss
has not improved since. The checkpoints follow the reference implementation: the first window
is 0.22 N steps, each next one 0.03 N shorter, never under 0.06 N (N = 100: windows 22, 19,
16, 13, 10, 7, 6, 6, ...).

One deliberate difference: at the first checkpoint the reference code compares the first
step's loss with a zero placeholder; we compare it with the loss at the start point, as the
paper's condition (1) is written.

Everything runs in one jitted program: a ``lax.while_loop`` over the steps that exits once
every example still being attacked is misclassified, inside a ``lax.while_loop`` over the runs
(restarts x target classes) that exits once no example is left robust. An example found
misclassified stays so (its first adversarial point is kept); the others are unaffected by
it, since each example's gradient comes from differentiating the sum of per-example losses.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from fosc_jax.autoattack.common import (AutoAttackResult, LogitsFn, Scalar, check_int,
                                        check_num_targets, per_example, target_of_rank,
                                        uniform, validate)
from fosc_jax.autoattack.dlr import dlr_loss, dlr_targeted_loss
from fosc_jax.losses import cross_entropy

LOSSES = ("ce", "dlr", "dlr-targeted")
MOMENTUM = 0.75


def checkpoint_windows(num_steps: int) -> np.ndarray:
    """[num_steps] int: the window length k at each checkpoint iteration, 0 elsewhere.

    A checkpoint falls after the k-th step of a window; k starts at max(int(0.22 N), 1) and
    shrinks by max(int(0.03 N), 1) per checkpoint down to max(int(0.06 N), 1).
    """
    first = max(int(0.22 * num_steps), 1)
    shortest = max(int(0.06 * num_steps), 1)
    shrink = max(int(0.03 * num_steps), 1)
    windows = np.zeros(num_steps, np.int32)
    k, count = first, 0
    for i in range(num_steps):
        count += 1
        if count == k:
            windows[i], count, k = k, 0, max(k - shrink, shortest)
    return windows


def _single_run(logits_fn: LogitsFn, loss_fn: Callable[[Array], Array], x0: Array, y: Array,
                key: Array, eps_b: Array, active: Array, num_steps: int, rho: float):
    """One APGD run from a random start; returns (fooled [B], first adversarial x, steps,
    best-loss iterate)."""
    batch, ndim = x0.shape[0], x0.ndim
    lower, upper = jnp.maximum(x0 - eps_b, 0.0), jnp.minimum(x0 + eps_b, 1.0)
    windows = jnp.asarray(checkpoint_windows(num_steps))

    def loss_grad(x):
        def total(x):
            logits = logits_fn(x)
            per_ex = loss_fn(logits)
            return jnp.sum(per_ex), (per_ex, logits)
        (_, (per_ex, logits)), g = jax.value_and_grad(total, has_aux=True)(x)
        wrong = jnp.argmax(logits, axis=-1).astype(jnp.int32) != y
        return per_ex, g, wrong

    def bcast(mask):
        return mask.reshape((batch,) + (1,) * (ndim - 1))

    t = uniform(key, x0.shape, -1.0, 1.0)
    t_max = jnp.max(jnp.abs(t).reshape(batch, -1), axis=1)
    x = jnp.clip(x0 + eps_b * t / (bcast(t_max) + 1e-12), 0.0, 1.0)
    loss, grad, wrong = loss_grad(x)
    init = dict(i=jnp.int32(0), x=x, x_old=x, grad=grad, x_best=x, grad_best=grad,
                loss_best=loss, loss_prev=loss, loss_best_last=loss,
                reduced_last=jnp.ones((batch,), bool), n_incr=jnp.zeros((batch,), jnp.int32),
                step=2.0 * eps_b, fooled=wrong, x_found=x)

    def body(s):
        i = s["i"]
        a = jnp.where(i > 0, MOMENTUM, 1.0)
        z = jnp.clip(s["x"] + s["step"] * jnp.sign(s["grad"]), lower, upper)
        x_new = jnp.clip(s["x"] + (z - s["x"]) * a + (s["x"] - s["x_old"]) * (1.0 - a),
                         lower, upper)
        loss, grad, wrong = loss_grad(x_new)
        x_found = jnp.where(bcast(wrong & ~s["fooled"]), x_new, s["x_found"])
        n_incr = s["n_incr"] + (loss > s["loss_prev"]).astype(jnp.int32)
        better = loss > s["loss_best"]
        x_best = jnp.where(bcast(better), x_new, s["x_best"])
        grad_best = jnp.where(bcast(better), grad, s["grad_best"])
        loss_best = jnp.where(better, loss, s["loss_best"])
        # checkpoint: halve the step of examples that oscillate or stopped improving
        w = windows[i]
        at_ckpt = w > 0
        oscillating = n_incr.astype(jnp.float32) <= rho * w.astype(jnp.float32)
        stalled = ~s["reduced_last"] & (s["loss_best_last"] >= loss_best)
        reduce = at_ckpt & (oscillating | stalled)
        return dict(
            i=i + 1, x=jnp.where(bcast(reduce), x_best, x_new), x_old=s["x"],
            grad=jnp.where(bcast(reduce), grad_best, grad), x_best=x_best,
            grad_best=grad_best, loss_best=loss_best, loss_prev=loss,
            loss_best_last=jnp.where(at_ckpt, loss_best, s["loss_best_last"]),
            reduced_last=jnp.where(at_ckpt, oscillating | stalled, s["reduced_last"]),
            n_incr=jnp.where(at_ckpt, 0, n_incr),
            step=jnp.where(bcast(reduce), s["step"] * 0.5, s["step"]),
            fooled=s["fooled"] | wrong, x_found=x_found)

    def cond(s):
        return (s["i"] < num_steps) & jnp.any(active & ~s["fooled"])

    final = jax.lax.while_loop(cond, body, init)
    return final["fooled"], final["x_found"], final["i"], final["x_best"]


def apgd(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
         loss: str = "ce", num_steps: int = 100, num_restarts: int = 1,
         num_targets: int = 9, rho: float = 0.75) -> AutoAttackResult:
    """APGD on ``loss``: "ce" (APGD-CE), "dlr" (APGD-DLR) or "dlr-targeted" (APGD-T).

    Only examples classified correctly at ``x0`` are attacked; each restart (and, for APGD-T,
    each target class: the 2nd, 3rd, ... most likely class at ``x0``, ``num_restarts`` runs
    each) runs only while some example is still robust. AutoAttack's standard settings:
    ``num_steps=100``, ``num_restarts=1``, ``num_targets=9``, ``rho=0.75``.

    Args:
      logits_fn: pure function, batch in [0, 1] -> logits [B, C]; examples independent.
      x0: clean inputs [B, ...] in [0, 1]. y: integer labels [B]. key: PRNG key.
      eps: L-inf radius, scalar or [B].
    Returns an :class:`AutoAttackResult`.
    """
    num_classes = validate(logits_fn, x0, y, eps, num_steps)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}.")
    check_int(num_restarts, "num_restarts")
    if not 0.0 < float(rho) < 1.0:
        raise ValueError(f"rho must lie in (0, 1), got {rho}.")
    targeted = loss == "dlr-targeted"
    min_classes = {"ce": 2, "dlr": 3, "dlr-targeted": 4}[loss]
    if num_classes < min_classes:
        raise ValueError(f"APGD with loss {loss!r} needs at least {min_classes} classes, "
                         f"got {num_classes}.")
    if targeted:
        check_num_targets(num_targets, num_classes, "APGD-T")
    num_runs = num_restarts * (num_targets if targeted else 1)

    x0 = jax.lax.stop_gradient(jnp.asarray(x0, jnp.float32))
    y = jnp.asarray(y, jnp.int32)
    eps_b = per_example(eps, x0.shape[0], x0.ndim)
    clean_logits = logits_fn(x0)
    robust0 = jnp.argmax(clean_logits, axis=-1).astype(jnp.int32) == y

    def run(s):
        r = s["r"]
        if targeted:
            target = target_of_rank(clean_logits, 2 + r // num_restarts)
            loss_fn = lambda z: dlr_targeted_loss(z, y, target)  # noqa: E731
        elif loss == "dlr":
            loss_fn = lambda z: dlr_loss(z, y)  # noqa: E731
        else:
            loss_fn = lambda z: cross_entropy(z, y)  # noqa: E731
        fooled, found, steps, best = _single_run(logits_fn, loss_fn, x0, y,
                                                 jax.random.fold_in(key, r), eps_b,
                                                 s["robust"], num_steps, float(rho))
        newly = s["robust"] & fooled
        bmask = newly.reshape((-1,) + (1,) * (x0.ndim - 1))
        attacked = s["robust"].reshape(bmask.shape)
        return dict(r=r + 1, robust=s["robust"] & ~fooled,
                    x_adv=jnp.where(bmask, found, s["x_adv"]), iters=s["iters"] + steps,
                    x_best=jnp.where(attacked, best, s["x_best"]))

    final = jax.lax.while_loop(
        lambda s: (s["r"] < num_runs) & jnp.any(s["robust"]), run,
        dict(r=jnp.int32(0), robust=robust0, x_adv=x0, iters=jnp.int32(0), x_best=x0))
    return AutoAttackResult(x_adv=jax.lax.stop_gradient(final["x_adv"]),
                            robust=final["robust"], iterations=final["iters"],
                            x_best=jax.lax.stop_gradient(final["x_best"]))


def apgd_ce(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
            num_steps: int = 100, num_restarts: int = 1) -> AutoAttackResult:
    """APGD on the cross-entropy loss (AutoAttack's first attack)."""
    return apgd(logits_fn, x0, y, key, eps=eps, loss="ce", num_steps=num_steps,
                num_restarts=num_restarts)


def apgd_dlr(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
             num_steps: int = 100, num_restarts: int = 1) -> AutoAttackResult:
    """APGD on the untargeted DLR loss."""
    return apgd(logits_fn, x0, y, key, eps=eps, loss="dlr", num_steps=num_steps,
                num_restarts=num_restarts)


def apgd_t(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
           num_steps: int = 100, num_targets: int = 9, num_restarts: int = 1
           ) -> AutoAttackResult:
    """APGD on the targeted DLR loss, one run per target class (AutoAttack's APGD-T)."""
    return apgd(logits_fn, x0, y, key, eps=eps, loss="dlr-targeted", num_steps=num_steps,
                num_restarts=num_restarts, num_targets=num_targets)


__all__ = ["apgd", "apgd_ce", "apgd_dlr", "apgd_t", "checkpoint_windows", "LOSSES"]
