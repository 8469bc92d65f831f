"""fosc_jax: FOSC and dynamic adversarial training (Wang et al., ICML 2019) in JAX/Flax."""
from fosc_jax import attacks, losses
from fosc_jax.attacks import AttackResult, cw_inf, dynamic_pgd, fgsm, masked_pgd, pgd
from fosc_jax.criterion import fosc, fosc_box

__version__ = "0.1.0"

__all__ = ["fosc", "fosc_box", "attacks", "losses", "AttackResult", "fgsm", "pgd",
           "cw_inf", "dynamic_pgd", "masked_pgd", "__version__"]
