"""FGSM-then-PGD: FGSM (one step of size eps, no random start) for ``defense.fgsm_epochs``
epochs, then PGD-K (the paper's "FGSM + PGD" baseline)."""
from __future__ import annotations

import ml_collections
import numpy as np

from fosc_jax.errors import ConfigError
from fosc_jax.defenses.base import AttackSettings, Defense


class FgsmPgd(Defense):
    name = "fgsm_pgd"
    label = "FGSM-then-PGD"

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        if config.defense.fgsm_epochs < 0:
            raise ConfigError(f"config.defense.fgsm_epochs = {config.defense.fgsm_epochs!r} "
                              "is invalid: must be >= 0.")

    def attack_settings(self, epoch: int, batch: int, state) -> AttackSettings:
        if epoch < self.config.defense.fgsm_epochs:
            eps = self.config.attack.eps
            return self.pgd_settings(batch, threshold=-np.inf, budget=1, step=eps,
                                     max_steps=1, random_start=False)
        return self.pgd_settings(batch)
