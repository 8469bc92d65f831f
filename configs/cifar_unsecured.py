"""CIFAR-10 unsecured: the paper's setting (see fosc_jax/config.py: cifar_config).

    python train.py --config configs/cifar_unsecured.py --workdir runs/cifar_unsecured
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("unsecured")
