"""L-inf attacks as one masked PGD loop: fgsm, pgd, cw_inf and dynamic_pgd configure it.

Every attack in the paper is the same loop with different settings: a per-example step
budget, a step size, a FOSC threshold and a random start. ``masked_pgd`` unrolls the steps at
trace time by default (fastest on XLA:CPU); with ``unroll=k`` they run as a
``lax.while_loop`` over blocks of k steps that exits once no example is still active, so a
batch whose examples all converge early costs fewer gradient evaluations (``dynamic_pgd``
uses this by default, with k = 1).

An attack takes ``logits_fn``, a pure function from a batch in [0, 1] to logits [B, C].
Gradients of each example's loss come from differentiating the SUM of per-example losses, so
an example's gradient and FOSC do not depend on the batch around it (as long as
``logits_fn`` itself treats examples independently, e.g. BatchNorm in inference mode).

Call the attacks under ``jax.jit`` (they trace fine: flat code when unrolled, one XLA while
loop with ``unroll``).
Do not differentiate through them: the returned ``x_adv`` is wrapped in ``stop_gradient``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from fosc_jax._checks import (check_eps, check_labels, check_logits, check_positive,
                              is_concrete)
from fosc_jax.criterion import fosc as fosc_fn
from fosc_jax.losses import AttackLoss, resolve_loss

LogitsFn = Callable[[Array], Array]
Scalar = Union[float, Array]
Loss = Union[str, AttackLoss]   # a registered name ("ce", "cw") or a function
FOSC_ORIGINS = ("clean", "start")  # FOSC measured from x0 (paper) or the random start


@flax.struct.dataclass
class AttackResult:
    """What every attack returns (a pytree, so it passes through jit).

    Attributes:
      x_adv: adversarial inputs [B, ...], inside the eps-ball and [0, 1]; a constant.
      fosc: FOSC of ``x_adv`` w.r.t. the FOSC origin (clean x0 by default) using the
        gradient at ``x_adv`` [B], float32.
      num_steps: steps each example took [B], int32.
      loss: the attack loss at ``x_adv`` [B] (cross-entropy, or the CW margin).
      iterations: how many times the loop body ran (scalar int32) = max(num_steps).
      fosc_trace: [max_steps + 1, B] FOSC after each iteration (row 0: start point), or
        None unless ``record_trace=True``. Stopped examples repeat their last value.
      loss_trace: like ``fosc_trace`` for the attack loss.
    """
    x_adv: Array
    fosc: Array
    num_steps: Array
    loss: Array
    iterations: Array
    fosc_trace: Optional[Array] = None
    loss_trace: Optional[Array] = None


def _batch_field(axis: Optional[int]):
    """A LoopState field whose batch lies on ``axis`` (None: shared by the whole batch)."""
    return flax.struct.field(metadata={"batch_axis": axis})


@flax.struct.dataclass
class LoopState:
    """The state of a :class:`PGDLoop` between steps (a pytree, so it crosses jit).

    Each field declares the axis its batch lies on; :meth:`take` and :meth:`put` move rows
    by that declaration (the trainer's batch compaction), so a new field cannot be missed.
    """
    x: Array = _batch_field(0)            # current point [B, ...]
    g: Array = _batch_field(0)            # gradient of the attack loss there [B, ...]
    c: Array = _batch_field(0)            # FOSC there [B]
    loss: Array = _batch_field(0)         # attack loss there [B]
    steps: Array = _batch_field(0)        # steps taken [B]
    active: Array = _batch_field(0)       # still attacking [B]
    k: Array = _batch_field(None)         # iterations in which some example moved
    fosc_trace: Array = _batch_field(1)   # [T, B] (T = 1 unless traced)
    loss_trace: Array = _batch_field(1)

    def take(self, idx: Array) -> "LoopState":
        """The state of rows ``idx`` (the shared fields as they are)."""
        return self.replace(**{f.name: getattr(self, f.name)[_rows(f, idx)]
                               for f in _batched_fields()})

    def put(self, idx: Array, part: "LoopState") -> "LoopState":
        """This state with rows ``idx`` replaced by ``part`` (from :meth:`take`) and the
        part's shared fields."""
        out = {f.name: getattr(part, f.name) for f in dataclasses.fields(self)
               if f.metadata["batch_axis"] is None}
        for f in _batched_fields():
            out[f.name] = getattr(self, f.name).at[_rows(f, idx)].set(getattr(part, f.name))
        return self.replace(**out)


def _batched_fields() -> list:
    return [f for f in dataclasses.fields(LoopState) if f.metadata["batch_axis"] is not None]


def _rows(field, idx: Array) -> tuple:
    """The index of rows ``idx`` along ``field``'s batch axis."""
    return (slice(None),) * field.metadata["batch_axis"] + (idx,)


def _per_example(value: Scalar, batch: int, ndim: int) -> Array:
    """Scalar or [B] setting -> float32 [B, 1, ..., 1] that broadcasts against inputs."""
    v = jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch,))
    return v.reshape((batch,) + (1,) * (ndim - 1))


def _check_step_count(value, name: str) -> None:
    """A step count is an int >= 1; the error names the caller's own argument."""
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")


def _validate(logits_fn: LogitsFn, x0: Array, y: Array, eps: Scalar, step_size: Scalar,
              max_steps: int, budget: Optional[Array]) -> None:
    if jnp.ndim(x0) < 2:
        raise ValueError(f"x0 must be a batch [B, ...] of inputs, got shape {np.shape(x0)}.")
    batch = x0.shape[0]
    check_eps(eps, batch)
    check_positive(step_size, batch, "step_size")
    _check_step_count(max_steps, "max_steps")
    if budget is not None:
        if tuple(np.shape(budget)) != (batch,):
            raise ValueError(f"budget must have shape ({batch},), got {np.shape(budget)}.")
        if is_concrete(budget) and (np.min(budget) < 0 or np.max(budget) > max_steps):
            raise ValueError(f"budget values must lie in [0, max_steps={max_steps}], got "
                             f"[{np.min(budget)}, {np.max(budget)}].")
    check_labels(y, batch, name="y")
    try:
        out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x0.shape, jnp.float32))
    except Exception as err:  # surface the model's own error with context
        raise ValueError(f"logits_fn failed on an input of shape {x0.shape}: {err}") from err
    if not hasattr(out, "shape"):
        raise ValueError(f"logits_fn must return one array of shape ({batch}, num_classes), "
                         f"got {type(out).__name__}.")
    num_classes = check_logits(out, batch, name="logits_fn(x0)")
    check_labels(y, batch, num_classes, name="y")


class PGDLoop:
    """The masked sign-gradient loop of :func:`masked_pgd`, as pieces a caller can drive.

    ``init()`` evaluates the gradient at the start point; ``step(s)`` moves the active
    examples once; ``steps(s, n)`` unrolls n steps at trace time; ``run_blocks(s, n)`` is a
    ``lax.while_loop`` over blocks of n unrolled steps that exits once no example is active;
    ``result(s)`` packs the final state. The state ``s`` is a :class:`LoopState` (a pytree),
    so it can cross jit boundaries: the trainer's host-checked executor runs the blocks from
    Python on XLA:CPU, where a while_loop body runs ~1.6x slower than the same steps unrolled
    (BENCHMARKS.md). Build it inside the traced function; nothing here is validated
    (``masked_pgd`` validates).
    """

    def __init__(self, logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
                 step_size: Scalar, max_steps: int, budget: Optional[Array] = None,
                 threshold: Scalar = -jnp.inf, random_start: bool = True,
                 loss: Loss = "ce", kappa: float = 50.0, fosc_origin: str = "clean",
                 record_trace: bool = False, start_std: Optional[float] = None,
                 origin: Optional[Array] = None):
        self.per_example_loss = resolve_loss(loss, kappa)
        self.logits_fn, self.y = logits_fn, y
        self.batch, self.ndim = batch, ndim = x0.shape[0], x0.ndim
        self.max_steps, self.record_trace, self.threshold = max_steps, record_trace, threshold
        x0 = jax.lax.stop_gradient(jnp.asarray(x0, jnp.float32))
        eps_b = _per_example(eps, batch, ndim)
        self.alpha_b = _per_example(step_size, batch, ndim)
        self.eps_flat = jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (batch,))
        self.budget = (jnp.full((batch,), max_steps, jnp.int32) if budget is None
                       else jnp.asarray(budget, jnp.int32))
        self.lower, self.upper = jnp.maximum(x0 - eps_b, 0.0), jnp.minimum(x0 + eps_b, 1.0)
        if random_start:
            if start_std is None:  # uniform in the ball (Madry)
                noise = jax.random.uniform(key, x0.shape, jnp.float32, -1.0, 1.0) * eps_b
            else:  # Gaussian (TRADES: 0.001 * N(0, 1)), kept inside the ball
                noise = jnp.clip(start_std * jax.random.normal(key, x0.shape, jnp.float32),
                                 -eps_b, eps_b)
            start = jnp.clip(x0 + noise, 0.0, 1.0)
            start = jnp.where(_per_example(self.budget > 0, batch, ndim) > 0, start, x0)
        else:
            start = x0
        self.start = start
        # An explicit origin continues a loop on a subset of a batch whose start was drawn
        # for the whole batch (the trainer's compaction); ``init`` is not called then.
        if origin is not None:
            self.origin = jax.lax.stop_gradient(jnp.asarray(origin, jnp.float32))
        else:
            self.origin = x0 if fosc_origin == "clean" else start

    def _loss_and_grad(self, x: Array):
        def total(x):
            per_ex = self.per_example_loss(self.logits_fn(x), self.y)
            return jnp.sum(per_ex), per_ex
        (_, per_ex), g = jax.value_and_grad(total, has_aux=True)(x)
        return per_ex, g

    def _criterion(self, g: Array, x: Array) -> Array:
        return fosc_fn(g, x - self.origin, self.eps_flat)

    def init(self) -> LoopState:
        """Loss, gradient and FOSC at the start point; every example with a budget active."""
        loss0, g0 = self._loss_and_grad(self.start)
        c0 = self._criterion(g0, self.start)
        trace_len = self.max_steps + 1 if self.record_trace else 1
        trace = jnp.full((trace_len, self.batch), jnp.nan, jnp.float32)
        return LoopState(x=self.start, g=g0, c=c0, loss=loss0,
                         steps=jnp.zeros((self.batch,), jnp.int32), active=self.budget > 0,
                         k=jnp.int32(0), fosc_trace=trace.at[0].set(c0),
                         loss_trace=trace.at[0].set(loss0))

    def step(self, s: LoopState) -> LoopState:
        """One masked sign step for the active examples, then gradient and FOSC there."""
        act = s.active
        act_b = _per_example(act, self.batch, self.ndim) > 0
        moved = jnp.clip(s.x + self.alpha_b * jnp.sign(s.g), self.lower, self.upper)
        x = jnp.where(act_b, moved, s.x)
        new_loss, g = self._loss_and_grad(x)
        c = jnp.where(act, self._criterion(g, x), s.c)
        new_loss = jnp.where(act, new_loss, s.loss)
        steps = s.steps + act.astype(jnp.int32)
        # k counts iterations in which some example moved (= max(num_steps)); a step taken
        # when nobody is active (inside an unrolled block) changes nothing, k included.
        k = s.k + jnp.any(act).astype(jnp.int32)
        out = LoopState(x=x, g=jnp.where(act_b, g, s.g), c=c, loss=new_loss, steps=steps,
                        active=act & (steps < self.budget) & (c > self.threshold), k=k,
                        fosc_trace=s.fosc_trace, loss_trace=s.loss_trace)
        if self.record_trace:
            out = out.replace(fosc_trace=s.fosc_trace.at[k].set(c),
                              loss_trace=s.loss_trace.at[k].set(new_loss))
        return out

    def steps(self, s: LoopState, n: int) -> LoopState:
        """``n`` steps unrolled at trace time (stopped examples are masked, not skipped)."""
        for _ in range(n):
            s = self.step(s)
        return s

    def run_blocks(self, s: LoopState, block: int) -> LoopState:
        """Steps until no example is active or ``max_steps`` were taken: a while_loop over
        blocks of ``block`` unrolled steps (a block costs its steps even if all stop early)."""
        n_blocks = -(-self.max_steps // block)
        out, _ = jax.lax.while_loop(
            lambda t: jnp.any(t[0].active) & (t[1] < n_blocks),
            lambda t: (self.steps(t[0], block), t[1] + 1),
            (s, jnp.int32(0)))
        return out

    def result(self, s: LoopState) -> AttackResult:
        out = AttackResult(x_adv=jax.lax.stop_gradient(s.x), fosc=s.c,
                           num_steps=s.steps, loss=s.loss, iterations=s.k)
        if self.record_trace:
            # Rows after the loop exited repeat the final values (examples had all stopped).
            fill = jnp.arange(self.max_steps + 1)[:, None] > s.k
            out = out.replace(fosc_trace=jnp.where(fill, s.c[None], s.fosc_trace),
                              loss_trace=jnp.where(fill, s.loss[None], s.loss_trace))
        return out


def masked_pgd(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
               step_size: Scalar, max_steps: int, budget: Optional[Array] = None,
               threshold: Scalar = -jnp.inf, random_start: bool = True, loss: Loss = "ce",
               kappa: float = 50.0, fosc_origin: str = "clean",
               record_trace: bool = False, unroll: Optional[int] = None,
               start_std: Optional[float] = None) -> AttackResult:
    """The one attack loop: sign-gradient ascent with per-example stopping.

    ``active = (steps < budget) & (fosc > threshold)``; the first step is always taken by
    every example with a budget > 0. An example that stops never moves again and keeps the
    FOSC and loss it stopped with. Examples with budget 0 return ``x0`` unchanged (no random
    start): the clean part of a curriculum batch.

    Args:
      logits_fn: pure function, batch in [0, 1] -> logits [B, C].
      x0: clean inputs [B, ...] in [0, 1].
      y: integer labels [B].
      key: PRNG key for the random start.
      eps: L-inf radius, scalar or [B].
      step_size: step length, scalar or [B].
      max_steps: static upper bound on steps (the loop never runs longer).
      budget: optional int [B] per-example step budget in [0, max_steps].
      threshold: FOSC level c_t below which an example stops (-inf: never, +inf: after one).
      random_start: start from x0 + U(-eps, eps) clipped to [0, 1] (or, with
        ``start_std``, from x0 + start_std * N(0, 1) kept in the ball, as TRADES does).
      loss: "ce" (cross-entropy), "cw" (CW margin with ``kappa``), or any function
        ``(logits, labels) -> [B]`` (e.g. ``losses.kl_to_clean(clean_logits)``).
      fosc_origin: "clean" (paper: FOSC w.r.t. x0) or "start" (released code: w.r.t. the
        random start, so FOSC can be negative).
      record_trace: also return FOSC and loss after every iteration.
      unroll: None (default) unrolls all ``max_steps`` steps at trace time: fastest on
        XLA:CPU, no early exit. An int k takes the first step, then runs a
        ``lax.while_loop`` over blocks of k unrolled steps that exits once no example is
        active (the early exit Dynamic AT saves compute with on accelerators). Results are
        identical for every choice.
    """
    _validate(logits_fn, x0, y, eps, step_size, max_steps, budget)
    if unroll is not None and (not isinstance(unroll, (int, np.integer)) or unroll < 1):
        raise ValueError(f"unroll must be None or an int >= 1, got {unroll!r}.")
    if fosc_origin not in FOSC_ORIGINS:
        raise ValueError(f"fosc_origin must be one of {list(FOSC_ORIGINS)}, got "
                         f"{fosc_origin!r}.")
    if start_std is not None and not (isinstance(start_std, (int, float)) and start_std > 0):
        raise ValueError(f"start_std must be None or a float > 0, got {start_std!r}.")
    resolve_loss(loss, kappa)  # an unknown loss name fails here, before tracing
    loop = PGDLoop(logits_fn, x0, y, key, eps=eps, step_size=step_size, max_steps=max_steps,
                   budget=budget, threshold=threshold, random_start=random_start, loss=loss,
                   kappa=kappa, fosc_origin=fosc_origin, record_trace=record_trace,
                   start_std=start_std)
    state = loop.step(loop.init())  # the first step is always taken
    if unroll is None or unroll >= max_steps - 1:
        state = loop.steps(state, max_steps - 1)
    else:
        state = loop.run_blocks(state, unroll)
    return loop.result(state)


def fgsm(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
         random_start: bool = False, loss: Loss = "ce", kappa: float = 50.0) -> AttackResult:
    """Fast gradient sign method: one step of size eps (from x0, or a random start)."""
    return masked_pgd(logits_fn, x0, y, key, eps=eps, step_size=eps, max_steps=1,
                      random_start=random_start, loss=loss, kappa=kappa)


def pgd(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
        step_size: Scalar, num_steps: int, random_start: bool = True, loss: Loss = "ce",
        kappa: float = 50.0, record_trace: bool = False) -> AttackResult:
    """Projected gradient descent (Madry et al.): ``num_steps`` sign steps for every example."""
    _check_step_count(num_steps, "num_steps")
    return masked_pgd(logits_fn, x0, y, key, eps=eps, step_size=step_size,
                      max_steps=num_steps, random_start=random_start, loss=loss,
                      kappa=kappa, record_trace=record_trace)


def cw_inf(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
           step_size: Scalar, num_steps: int = 30, random_start: bool = True,
           kappa: float = 50.0) -> AttackResult:
    """CW-inf: PGD on the margin loss -relu(z_y - max_{j != y} z_j + kappa), 30 steps."""
    return pgd(logits_fn, x0, y, key, eps=eps, step_size=step_size, num_steps=num_steps,
               random_start=random_start, loss="cw", kappa=kappa)


def dynamic_pgd(logits_fn: LogitsFn, x0: Array, y: Array, key: Array, *, eps: Scalar,
                step_size: Scalar, num_steps: int, threshold: Scalar,
                random_start: bool = True, loss: Loss = "ce", kappa: float = 50.0,
                fosc_origin: str = "clean", record_trace: bool = False,
                unroll: Optional[int] = 1) -> AttackResult:
    """Dynamic PGD (Algorithm 1): each example stops once its FOSC is <= ``threshold``.

    The first step is always taken; the ``lax.while_loop`` exits when no example is active
    or after ``num_steps`` steps (``unroll`` steps per loop iteration; None unrolls all
    steps and gives up the early exit, see :func:`masked_pgd`).
    """
    _check_step_count(num_steps, "num_steps")
    return masked_pgd(logits_fn, x0, y, key, eps=eps, step_size=step_size,
                      max_steps=num_steps, threshold=threshold, random_start=random_start,
                      loss=loss, kappa=kappa, fosc_origin=fosc_origin,
                      record_trace=record_trace, unroll=unroll)


__all__ = ["AttackResult", "LoopState", "PGDLoop", "masked_pgd", "fgsm", "pgd", "cw_inf",
           "dynamic_pgd"]
