"""Shrinking a masked PGD batch to the examples still attacking.

A batch of a masked PGD loop costs its slowest example: stopped examples are masked, not
skipped, so with static shapes a batch whose examples mostly stopped after one step still
pays for the full batch at every step. When the host-checked early exit
(:class:`~fosc_jax.training.executors.HostChecked`, ``executor = "host_compact"``) finds
that a smaller batch would hold every active example, the next steps run on a batch of that
size: the active examples first, padded with stopped ones (masked, so they do not move), and
the results are written back to their rows afterwards. Sizes halve down a fixed ladder, each compiled once.

Per-example results are unchanged only if an example's gradient does not depend on the rest
of its batch: BatchNorm in inference mode while attacking (``attack.bn_mode = "eval"``).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
from jax import Array


@flax.struct.dataclass
class Part:
    """The attack on the rows of a batch a compaction kept: their inputs, labels, clean
    prediction (None unless the attack loss needs it), FOSC origin, budget and step size,
    and their loop state (moved by :meth:`~fosc_jax.attacks.LoopState.take`)."""
    x: Array
    y: Array
    clean: Optional[Array]
    origin: Array
    budget: Array
    step_size: Array
    s: Any   # LoopState


def ladder(batch: int, min_size: int, multiple: int = 1) -> tuple[int, ...]:
    """Batch sizes to shrink through: ``batch``, ``batch/2``, ... while each is a whole
    number, at least ``min_size`` and a multiple of ``multiple`` (the mesh's device count).
    Descending; ``(batch,)`` alone means no compaction."""
    sizes = [int(batch)]
    while (sizes[-1] % 2 == 0 and sizes[-1] // 2 >= min_size
           and (sizes[-1] // 2) % multiple == 0):
        sizes.append(sizes[-1] // 2)
    return tuple(sizes)


def fit(num_active: int, sizes: tuple[int, ...]) -> int:
    """The smallest size of the ladder that holds ``num_active`` examples."""
    return min(s for s in sizes if s >= num_active)


def active_first(active: Array, size: int) -> Array:
    """Row indices [size] into the batch: every active example (in batch order), then
    stopped ones as padding. Distinct, so writing back is a permutation of rows."""
    return jnp.argsort(jnp.logical_not(active).astype(jnp.int32), stable=True)[:size]


def take(tree: Any, idx: Array) -> Any:
    """Rows ``idx`` of every array in ``tree`` (each has the batch on axis 0; None passes)."""
    return jax.tree_util.tree_map(lambda a: a[idx], tree)
