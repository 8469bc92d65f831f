"""CIFAR-10 dynamic: the paper's setting (see fosc_jax/config.py: cifar_config).

    python train.py --config configs/cifar_dynamic.py --workdir runs/cifar_dynamic
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("dynamic")
