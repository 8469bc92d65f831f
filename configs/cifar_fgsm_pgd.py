"""CIFAR-10: FGSM-then-PGD (the paper's section 3.2).

The paper's setting (section 5.1), from fosc_jax.config.cifar_config: 8-layer CNN,
eps 8/255, PGD-10, 120 epochs, crop and flip.

    python train.py --config configs/cifar_fgsm_pgd.py --workdir runs/cifar_fgsm_pgd
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("fgsm_pgd")
