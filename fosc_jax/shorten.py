"""Shortened (or lengthened) runs: scale a config's epoch-based schedule with its length.

``python train.py --config configs/cifar_dynamic.py --epochs 2`` runs 2 epochs with the lr
drops, Dynamic AT's T', FGSM-then-PGD's FGSM epochs and the plateau curriculum's patience
multiplied by 2 / 120 (the fixed curriculum already follows ``num_epochs``).
"""
from __future__ import annotations

import ml_collections

from fosc_jax.errors import ConfigError

# Fields counted in epochs, scaled with num_epochs.
SCALED_FIELDS: tuple[str, ...] = ("optim.lr_drop_epochs", "defense.t_prime",
                                  "defense.fgsm_epochs", "defense.curriculum_patience")


def scale_schedule(config: ml_collections.ConfigDict,
                   num_epochs: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` that runs ``num_epochs`` epochs with every field in
    :data:`SCALED_FIELDS` multiplied by ``num_epochs / config.num_epochs`` and rounded:
    lr drops stay in [1, num_epochs], T' and the patience in [1, num_epochs], the FGSM
    epochs in [0, num_epochs]."""
    if int(num_epochs) < 1:
        raise ConfigError(f"--epochs = {num_epochs} is invalid: must be >= 1 (the number of "
                          "epochs to run, e.g. --epochs 2).")
    old, new = int(config.num_epochs), int(num_epochs)
    ratio = new / old

    def scale(value: float, lo: int) -> int:
        return min(max(int(round(value * ratio)), lo), new)

    out = config.copy_and_resolve_references()
    out.num_epochs = new
    out.optim.lr_drop_epochs = tuple(scale(e, 1) for e in config.optim.lr_drop_epochs if e > 0)
    out.defense.t_prime = scale(config.defense.t_prime, 1)
    out.defense.fgsm_epochs = scale(config.defense.fgsm_epochs, 0)
    out.defense.curriculum_patience = scale(config.defense.curriculum_patience, 1)
    return out


def describe(config: ml_collections.ConfigDict) -> str:
    """The scaled fields, for the console: 'lr drops (1, 2), T' 2, ...'."""
    return (f"{config.num_epochs} epochs: lr drops at {tuple(config.optim.lr_drop_epochs)}, "
            f"T' {config.defense.t_prime}, FGSM epochs {config.defense.fgsm_epochs}, "
            f"curriculum patience {config.defense.curriculum_patience}")
