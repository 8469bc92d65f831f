"""Defenses as plug-ins: one module per defense, one registry.

Every defense trains with the same step (fosc_jax/training/trainer.py); a :class:`Defense`
subclass supplies what differs (see defenses/base.py):

| defense        | attack per example          | step       | stop at  | outer loss            |
| unsecured      | none                        | -          | -        | CE(f(x), y)           |
| standard       | PGD-K, uniform start        | eps/4      | never    | CE(f(x_adv), y)       |
| dynamic        | PGD-K, uniform start        | eps/4      | FOSC<=c_t| CE(f(x_adv), y)       |
| curriculum     | PGD-0..k across k+1 parts   | 2 eps/k    | never    | CE(f(x_adv), y)       |
| fgsm_pgd       | FGSM for some epochs, PGD-K | eps, eps/4 | never    | CE(f(x_adv), y)       |
| trades         | PGD-K on KL, Gaussian start | eps/4      | never    | CE(f(x)) + beta KL    |
| dynamic_trades | PGD-K on KL, Gaussian start | eps/4      | FOSC<=c_t| CE(f(x)) + beta KL    |

To add one: write a module here with a Defense subclass, add it to :data:`DEFENSES`, add
its config fields to ``fosc_jax/config.py`` and a config file to ``configs/``.
"""
from __future__ import annotations

from typing import Optional

import ml_collections

from fosc_jax.defenses.base import AttackSettings, Defense, make_settings
from fosc_jax.defenses.curriculum import Curriculum, curriculum_budget
from fosc_jax.defenses.dynamic import Dynamic
from fosc_jax.defenses.fgsm_pgd import FgsmPgd
from fosc_jax.defenses.standard import Standard
from fosc_jax.defenses.trades import DynamicTrades, Trades
from fosc_jax.defenses.unsecured import Unsecured

DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (Unsecured, Standard, Dynamic, Curriculum, FgsmPgd, Trades,
                              DynamicTrades)}


def get_defense(config: ml_collections.ConfigDict) -> Defense:
    """The defense ``config.defense.name`` names, built for ``config``."""
    name = config.defense.name
    if name not in DEFENSES:
        raise ValueError(f"config.defense.name = {name!r} is invalid: expected one of "
                         f"{list(DEFENSES)}.")
    return DEFENSES[name](config)


def settings_for_epoch(config: ml_collections.ConfigDict, epoch: int, batch: int,
                       state: Optional[dict] = None) -> AttackSettings:
    """The attack ``config``'s defense uses in ``epoch`` (0-based) for a global batch of
    ``batch`` (``state``: its cross-epoch state, a fresh run's by default)."""
    defense = get_defense(config)
    return defense.attack_settings(epoch, batch,
                                   defense.init_state() if state is None else state)


__all__ = ["AttackSettings", "Defense", "DEFENSES", "get_defense", "settings_for_epoch",
           "make_settings", "curriculum_budget", "Unsecured", "Standard", "Dynamic",
           "Curriculum", "FgsmPgd", "Trades", "DynamicTrades"]
