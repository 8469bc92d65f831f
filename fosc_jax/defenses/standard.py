"""Standard adversarial training (Madry et al. 2018): PGD-K on every example, every epoch."""
from __future__ import annotations

from fosc_jax.defenses.base import Defense


class Standard(Defense):
    """PGD-K, step eps/4, uniform random start; cross-entropy on x_adv (the base hooks)."""

    name = "standard"
    label = "Standard"
