"""Curriculum adversarial training (Cai et al. 2018): the attack strength k rises over time.

A batch is split into k + 1 equal parts attacked with PGD-0 .. PGD-k (step 2 eps / k). The
level k rises on a fixed schedule (``curriculum_rule = "fixed"``: every
``num_epochs / (max_k + 1)`` epochs) or once held-out PGD-k accuracy stops improving for
``curriculum_patience`` epochs (``"plateau"``, the original rule); the plateau state is
carried across epochs and checkpointed.
"""
from __future__ import annotations

import ml_collections
import numpy as np

from fosc_jax import schedules
from fosc_jax.errors import ConfigError
from fosc_jax.defenses.base import AttackSettings, Defense, Probe


def curriculum_budget(batch: int, k: int) -> np.ndarray:
    """Split a batch into k + 1 equal parts attacked with PGD-0 .. PGD-k (int32 [B])."""
    return (np.arange(batch) * (k + 1) // batch).astype(np.int32)


RULES = ("fixed", "plateau")


class Curriculum(Defense):
    name = "curriculum"
    label = "Curriculum"

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        rule = config.defense.curriculum_rule
        if rule not in RULES:
            raise ConfigError(f"config.defense.curriculum_rule = {rule!r} is invalid: "
                              f"expected one of {list(RULES)}.")
        if config.defense.curriculum_max_k < 1:
            raise ConfigError(f"config.defense.curriculum_max_k = "
                              f"{config.defense.curriculum_max_k!r} is invalid: must be >= 1.")

    @property
    def plateau(self) -> bool:
        return self.config.defense.curriculum_rule == "plateau"

    def level(self, epoch: int, state: dict) -> int:
        """k in ``epoch``: the fixed schedule's, or the plateau rule's (from ``state``)."""
        if self.plateau:
            return int(state["k"])
        return schedules.curriculum_level_fixed(epoch, self.config.num_epochs,
                                                int(self.config.defense.curriculum_max_k))

    def attack_settings(self, epoch: int, batch: int, state: dict) -> AttackSettings:
        k = self.level(epoch, state)
        # max_steps = k (static): a level compiles once and costs k steps, not K_max.
        return self.pgd_settings(batch, threshold=-np.inf, budget=curriculum_budget(batch, k),
                                 step=2 * self.config.attack.eps / max(k, 1), max_steps=k)

    def init_state(self) -> dict:
        # k: the level; best: best held-out PGD-k accuracy at this level; wait: epochs since.
        return {"k": np.int32(0), "best": np.float32(-1.0), "wait": np.int32(0)}

    def end_epoch(self, state: dict, epoch: int, probe: Probe) -> dict:
        """Plateau rule: raise k once held-out PGD-k accuracy (clean accuracy at k = 0) has
        not improved for ``curriculum_patience`` epochs."""
        if not self.plateau:
            return state
        k = int(state["k"])
        clean, robust = probe(max(k, 1), 2 / max(k, 1))
        acc = clean if k == 0 else robust
        best, wait = float(state["best"]), int(state["wait"])
        if acc > best:
            best, wait = acc, 0
        else:
            wait += 1
        d = self.config.defense
        new_k = schedules.curriculum_level_plateau(k, wait, int(d.curriculum_patience),
                                                   int(d.curriculum_max_k))
        if new_k != k:
            best, wait = -1.0, 0
        return {"k": np.int32(new_k), "best": np.float32(best), "wait": np.int32(wait)}

    def describe(self, epoch: int, state: dict) -> dict:
        return {"c_t": None, "curriculum_k": self.level(epoch, state)}
