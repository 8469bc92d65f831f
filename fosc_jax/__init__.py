"""fosc_jax: FOSC and dynamic adversarial training (Wang et al., ICML 2019) in JAX/Flax.

The maths is imported eagerly; training and the run directory (Orbax, optax) load on first use.
"""
from fosc_jax import attacks, losses
from fosc_jax.attacks import AttackResult, cw_inf, dynamic_pgd, fgsm, masked_pgd, pgd
from fosc_jax.classifier import Classifier
from fosc_jax.criterion import fosc, fosc_box

__version__ = "0.1.0"

_LAZY = {"load_classifier": ("fosc_jax.rundir.export", "load_classifier"),
         "train_and_evaluate": ("fosc_jax.training", "train_and_evaluate")}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fosc_jax' has no attribute {name!r}")


__all__ = ["fosc", "fosc_box", "attacks", "losses", "AttackResult", "Classifier", "fgsm", "pgd",
           "cw_inf", "dynamic_pgd", "masked_pgd", "load_classifier", "train_and_evaluate",
           "__version__"]
