"""Pure schedules of the epoch: FOSC threshold c_t, curriculum level, learning rate."""
from __future__ import annotations

import math
from typing import Sequence

import optax


def fosc_threshold(epoch: int, c_max: float, t_prime: int) -> float:
    """Linear c_t of Algorithm 1: ``max(c_max - t * c_max / T', 0)`` for 0-based epoch t."""
    if t_prime <= 0:
        raise ValueError(f"t_prime must be > 0, got {t_prime}.")
    return max(c_max - epoch * c_max / t_prime, 0.0)


def curriculum_level_fixed(epoch: int, num_epochs: int, max_k: int) -> int:
    """Fixed curriculum: k rises by one every ``num_epochs / (max_k + 1)`` epochs, up to max_k."""
    return min(int(math.floor(epoch * (max_k + 1) / num_epochs)), max_k)


def curriculum_level_plateau(k: int, epochs_without_gain: int, patience: int,
                             max_k: int) -> int:
    """Plateau rule (Cai et al.): raise k once held-out PGD-k accuracy stalls for ``patience``."""
    return min(k + 1, max_k) if epochs_without_gain >= patience else k


def learning_rate(lr: float, drop_epochs: Sequence[int], factor: float,
                  steps_per_epoch: int) -> optax.Schedule:
    """Piecewise-constant lr, multiplied by ``factor`` at each epoch in ``drop_epochs``."""
    boundaries = {int(e) * steps_per_epoch: factor for e in drop_epochs if int(e) > 0}
    return optax.piecewise_constant_schedule(lr, boundaries)


def lr_at_epoch(lr: float, drop_epochs: Sequence[int], factor: float, epoch: int) -> float:
    """The learning rate in force during ``epoch`` (for logs)."""
    return lr * factor ** sum(1 for e in drop_epochs if 0 < int(e) <= epoch)
