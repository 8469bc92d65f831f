"""CIFAR-10 curriculum: the paper's setting (see fosc_jax/config.py: cifar_config).

    python train.py --config configs/cifar_curriculum.py --workdir runs/cifar_curriculum
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("curriculum")
