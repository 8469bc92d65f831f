"""Unsecured: natural training, no attack (the accuracy baseline)."""
from __future__ import annotations

import numpy as np

from fosc_jax.defenses.base import AttackSettings, Defense


class Unsecured(Defense):
    """Cross-entropy on the clean batch; the step skips the attack (max_steps 0)."""

    name = "unsecured"
    label = "Unsecured"

    def attack_settings(self, epoch: int, batch: int, state) -> AttackSettings:
        return self.pgd_settings(batch, budget=0, max_steps=0, random_start=False,
                                 threshold=-np.inf)
