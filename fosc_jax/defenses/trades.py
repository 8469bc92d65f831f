"""TRADES (Zhang et al., ICML 2019) and Dynamic TRADES.

TRADES trades natural accuracy against robustness with the outer loss

    CE(f(x), y) + beta * KL(f(x) || f(x_adv)),

where x_adv maximises KL(f(x) || f(x')) over the eps-ball by PGD started at
x + 0.001 * N(0, 1), with f(x) held constant during the attack (the paper: beta 6).

Dynamic TRADES stops that inner maximisation per example once the FOSC of the KL objective
falls to the linear schedule's c_t, exactly as Dynamic AT does for the cross-entropy. Note
the scale: x0 minimises the KL (FOSC 0 there; the first step is always taken) and the KL's
FOSC levels off about 3x below the cross-entropy's, so ``defense.c_max`` is chosen on that
scale (docs/method.md measures it; the training logs print FOSC percentiles per epoch).
"""
from __future__ import annotations

from typing import Any, Optional

import ml_collections
from jax import Array

from fosc_jax.errors import ConfigError
from fosc_jax.defenses.base import AttackSettings, Defense, DynamicSchedule, Forward
from fosc_jax.losses import AttackLoss, cross_entropy, kl_divergence, kl_to_clean

START_STD = 0.001  # TRADES' start: x + 0.001 * N(0, 1)


class Trades(Defense):
    name = "trades"
    label = "TRADES"
    needs_clean_logits = True

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        beta = config.defense.get("trades_beta", None)
        if not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and beta >= 0):
            raise ConfigError(f"config.defense.trades_beta = {beta!r} is invalid: must be a "
                              "number >= 0 (the paper uses 6; 0 is natural training on the "
                              "clean batch).")

    def attack_settings(self, epoch: int, batch: int, state) -> AttackSettings:
        return self.pgd_settings(batch, start_std=START_STD)

    def attack_loss(self, clean_logits: Optional[Array]) -> AttackLoss:
        return kl_to_clean(clean_logits)

    def training_loss(self, forward: Forward, batch_stats: Any, x: Array, x_adv: Array,
                      y: Array, result: Any) -> tuple:
        """CE(f(x), y) + beta * KL(f(x) || f(x_adv)), both passes in training mode (the
        clean pass first, as the reference implementation runs them)."""
        clean_logits, batch_stats = forward(x, batch_stats)
        adv_logits, batch_stats = forward(x_adv, batch_stats)
        beta = float(self.config.defense.trades_beta)
        loss = cross_entropy(clean_logits, y) + beta * kl_divergence(clean_logits, adv_logits)
        return loss, adv_logits, batch_stats


class DynamicTrades(DynamicSchedule, Trades):
    """TRADES whose inner maximisation stops per example once FOSC (of the KL) <= c_t."""

    name = "dynamic_trades"
    label = "Dynamic TRADES"

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        Trades.validate(config)
        DynamicSchedule.validate(config)

    def attack_settings(self, epoch: int, batch: int, state) -> AttackSettings:
        return self.pgd_settings(batch, start_std=START_STD, threshold=self.threshold(epoch),
                                 early_exit=True)
