"""How training steps are compiled and run: one small object per execution path.

Every executor runs the same maths (:class:`~fosc_jax.training.trainer.Trainer`); they differ
in how a step is split into compiled programs, which only changes the speed:

``compiled``
    Each step is one compiled program; ``steps_per_call`` > 1 runs that many steps per call
    in a ``lax.scan`` (fewer dispatches, pays on accelerators). An attack that may stop
    early (Dynamic AT) runs as an in-graph ``while_loop`` over blocks of ``block`` steps.
``host``
    An attack that may stop early is driven from Python: its first step, then blocks of
    ``block`` unrolled steps until no example is active, then the update, each block its
    own program. On XLA:CPU a while_loop body runs ~1.6x slower than the same steps
    unrolled (BENCHMARKS.md), so this is faster there. Steps without an early exit run as
    in ``compiled``.
``host_compact``
    ``host``, and at each check the batch shrinks to the examples still attacking (halving
    down to ``compact_min``, :mod:`fosc_jax.training.compaction`), so a batch no longer
    costs its slowest example at full width. Exact only with ``attack.bn_mode = "eval"``.

``config.executor = "auto"`` picks ``host_compact`` (BN in eval mode) or ``host`` on XLA:CPU
and ``compiled`` elsewhere (:func:`resolve`); the trainer builds the executor once and the
training loop prints its description and records its name in metrics.jsonl.
"""
from __future__ import annotations

from typing import Optional, Protocol

import jax
import jax.numpy as jnp
from jax import Array

from fosc_jax.attacks import LoopState
from fosc_jax.config import EXECUTORS
from fosc_jax.defenses import AttackSettings
from fosc_jax.training import compaction

EXIT_BLOCK = 3    # attack steps between two checks for "no example active"
# The smallest batch ``host_compact`` shrinks to: a batch of 8 still costs about as much per
# example as one of 128 on XLA:CPU, and every size is one more compiled program.
COMPACT_MIN = 8


class Executor(Protocol):
    """What the training loop needs from an execution path."""
    name: str

    def describe(self) -> str:
        """What this path does, in a line (the training loop prints it at start)."""

    def step(self, state, x_uint8: Array, y: Array, settings: AttackSettings):
        """One step on a batch of uint8 images: (state, metrics); donates ``state``."""

    def run(self, state, x_train: Array, y_train: Array, indices: Array,
            settings: AttackSettings):
        """One step per row of ``indices`` [n, B] into the on-device split: (state, metrics
        stacked on a leading axis [n, ...]); donates ``state``."""


def resolve(name: str, backend: str, bn_mode: str) -> str:
    """The executor ``config.executor = name`` means on ``backend`` (``auto`` resolved)."""
    if name not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {name!r}.")
    if name != "auto":
        return name
    if backend != "cpu":
        return "compiled"
    return "host_compact" if bn_mode == "eval" else "host"


def build(trainer, name: str) -> Executor:
    """The executor called ``name`` (resolved, not ``auto``) for ``trainer``."""
    if name == "compiled":
        return Compiled(trainer)
    if name == "host":
        return HostChecked(trainer)
    if name == "host_compact":
        return HostChecked(trainer, compact_min=COMPACT_MIN)
    raise ValueError(f"no executor {name!r}; resolve 'auto' first ({list(EXECUTORS)}).")


def _calls(steps_per_call: int) -> str:
    return ("one step per compiled call" if steps_per_call == 1 else
            f"{steps_per_call} steps per compiled call (lax.scan)")


def _stack(metrics: dict) -> dict:
    """One step's metrics with a leading axis of length 1."""
    return jax.tree_util.tree_map(lambda a: a[None], metrics)


def _concat(chunks: list) -> dict:
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *chunks)


class Compiled:
    """Each step one compiled program, ``steps_per_call`` steps per call (``lax.scan``
    when > 1); an early exit is an in-graph while_loop over blocks of ``block`` steps."""
    name = "compiled"

    def __init__(self, trainer, block: int = EXIT_BLOCK):
        self.trainer, self.block = trainer, int(block)
        self.steps_per_call = trainer.steps_per_call
        self._step = jax.jit(self._one, donate_argnums=0)
        self._indexed = jax.jit(self._one_indexed, donate_argnums=0)
        self._scan = jax.jit(self._scanned, donate_argnums=0)

    def describe(self) -> str:
        return (f"{_calls(self.steps_per_call)}; an attack's early exit is an in-graph "
                f"while_loop over {self.block}-step blocks")

    def _one(self, state, x_uint8, y, settings):
        return self.trainer.train_step(state, x_uint8, y, settings, exit_block=self.block)

    def _one_indexed(self, state, x_train, y_train, idx, settings):
        return self._one(state, x_train[idx], y_train[idx], settings)

    def _scanned(self, state, x_train, y_train, indices, settings):
        def body(state, idx):
            return self._one_indexed(state, x_train, y_train, idx, settings)
        return jax.lax.scan(body, state, indices)

    def step(self, state, x_uint8, y, settings):
        return self._step(state, x_uint8, y, settings)

    def run(self, state, x_train, y_train, indices, settings):
        outs = []
        for start in range(0, indices.shape[0], self.steps_per_call):
            rows = indices[start:start + self.steps_per_call]
            if self.steps_per_call == 1:
                state, m = self._indexed(state, x_train, y_train, rows[0], settings)
                m = _stack(m)
            else:
                state, m = self._scan(state, x_train, y_train, rows, settings)
            outs.append(m)
        return state, _concat(outs)


class HostChecked:
    """An attack that may stop early is checked from the host after its first step and
    every ``block`` steps; with ``compact_min`` the batch shrinks to its active examples.
    Other steps run through :class:`Compiled`."""

    def __init__(self, trainer, block: int = EXIT_BLOCK, compact_min: Optional[int] = None):
        if compact_min is not None and trainer.config.attack.bn_mode != "eval":
            raise ValueError("compaction needs config.attack.bn_mode = 'eval': with BatchNorm "
                             "in train mode while attacking, an example's gradient depends on "
                             "its batch, so a smaller batch would change it.")
        self.trainer, self.block = trainer, int(block)
        self.name = "host" if compact_min is None else "host_compact"
        self.sizes = (compaction.ladder(trainer.batch_size, compact_min, trainer.mesh.size)
                      if compact_min is not None else (trainer.batch_size,))
        self.compiled = Compiled(trainer, block)
        self.begin = jax.jit(self._begin)
        self.block_steps = jax.jit(self._block)
        self.finish = jax.jit(self._finish, donate_argnums=0)
        self.gather = jax.jit(self._gather, static_argnums=7)
        self.part_block_steps = jax.jit(self._part_block)
        self.scatter = jax.jit(self._scatter)

    def describe(self) -> str:
        sizes = " > ".join(map(str, self.sizes))
        shrink = (f"; the batch shrinks to its active examples ({sizes})"
                  if len(self.sizes) > 1 else "")
        return (f"an attack's early exit is checked from the host every {self.block} steps"
                f"{shrink}; attacks without one: {_calls(self.compiled.steps_per_call)}")

    # -- the programs (each compiled once per shape) --------------------------------------
    def _begin(self, state, x_uint8, y, settings):
        """Augment, the clean prediction (if the attack loss needs it), the first step."""
        t = self.trainer
        x, y, key = t.prepare(state, x_uint8, y)
        clean = t.clean_logits(state, x)
        return x, y, key, clean, t.first_attack_step(state, x, y, key, settings, clean)

    def _block(self, state, x, y, key, clean, s, settings) -> LoopState:
        """``block`` more (masked) attack steps."""
        loop = self.trainer.attack_loop(state, x, y, key, settings, clean)
        return loop.steps(s, self.block)

    def _finish(self, state, x, y, key, clean, s, settings):
        loop = self.trainer.attack_loop(state, x, y, key, settings, clean)
        return self.trainer.update(state, x, y, loop.result(s), settings)

    def _gather(self, state, x, y, key, clean, s, settings, size: int):
        """The ``size`` rows holding every active example: their indices, and the attack
        on those rows (:class:`compaction.Part`)."""
        idx = compaction.active_first(s.active, size)
        origin = self.trainer.attack_loop(state, x, y, key, settings, clean).origin
        return idx, compaction.Part(x=x[idx], y=y[idx], clean=compaction.take(clean, idx),
                                    origin=origin[idx], budget=settings.budget[idx],
                                    step_size=settings.step_size[idx], s=s.take(idx))

    def _part_block(self, state, key, part, settings):
        """``block`` more attack steps on a compacted batch."""
        settings = settings.replace(budget=part.budget, step_size=part.step_size)
        loop = self.trainer.attack_loop(state, part.x, part.y, key, settings, part.clean,
                                        origin=part.origin)
        return part.replace(s=loop.steps(part.s, self.block))

    def _scatter(self, s: LoopState, idx, part) -> LoopState:
        return s.put(idx, part.s)

    # -- driving them ---------------------------------------------------------------------
    def step(self, state, x_uint8, y, settings):
        if not settings.early_exit:
            return self.compiled.step(state, x_uint8, y, settings)
        return self._exit_step(state, x_uint8, y, settings)

    def run(self, state, x_train, y_train, indices, settings):
        """Every row of ``indices`` is one step, whatever ``steps_per_call`` says."""
        if not settings.early_exit:
            return self.compiled.run(state, x_train, y_train, indices, settings)
        outs = []
        for row in indices:
            state, m = self._exit_step(state, x_train[row], y_train[row], settings)
            outs.append(_stack(m))
        return state, _concat(outs)

    def _exit_step(self, state, x_uint8, y, settings):
        """One step whose attack stops once no example is active (same numbers as the
        in-graph loop: stopped examples are masked). With several sizes, a check that
        finds the active examples fit a smaller one moves them into a batch of that size."""
        x, y, key, clean, s = self.begin(state, x_uint8, y, settings)
        idx, part = None, None          # the compacted batch, once there is one
        size, taken = self.sizes[0], 1
        while taken < settings.max_steps:
            active = int(jnp.sum((s if part is None else part.s).active))
            if active == 0:
                break
            smaller = compaction.fit(active, self.sizes)
            if smaller < size:
                if part is not None:
                    s = self.scatter(s, idx, part)
                size = smaller
                idx, part = self.gather(state, x, y, key, clean, s, settings, size)
            if part is None:
                s = self.block_steps(state, x, y, key, clean, s, settings)
            else:
                part = self.part_block_steps(state, key, part, settings)
            taken += self.block
        if part is not None:
            s = self.scatter(s, idx, part)
        return self.finish(state, x, y, key, clean, s, settings)
