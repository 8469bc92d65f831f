"""Dynamic adversarial training (Wang et al. 2019, Algorithm 1).

Each example's PGD stops once its FOSC falls to the epoch's threshold
``c_t = max(c_max - t * c_max / T', 0)``: weak attacks early, converged ones late.
"""
from __future__ import annotations

from fosc_jax.defenses.base import AttackSettings, Defense, DynamicSchedule


class Dynamic(DynamicSchedule, Defense):
    """PGD-K with the per-example FOSC stop at c_t; cross-entropy on x_adv."""

    name = "dynamic"
    label = "Dynamic"

    def attack_settings(self, epoch: int, batch: int, state) -> AttackSettings:
        return self.pgd_settings(batch, threshold=self.threshold(epoch), early_exit=True)
