"""CIFAR-10: Unsecured (natural training, no attack).

The paper's setting (section 5.1), from fosc_jax.config.cifar_config: 8-layer CNN,
eps 8/255, PGD-10, 120 epochs, crop and flip.

    python train.py --config configs/cifar_unsecured.py --workdir runs/cifar_unsecured
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("unsecured")
