"""CIFAR-10 standard: the paper's setting (see fosc_jax/config.py: cifar_config).

    python train.py --config configs/cifar_standard.py --workdir runs/cifar_standard
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("standard")
