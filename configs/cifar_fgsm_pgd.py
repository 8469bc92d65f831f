"""CIFAR-10 fgsm_pgd: the paper's setting (see fosc_jax/config.py: cifar_config).

    python train.py --config configs/cifar_fgsm_pgd.py --workdir runs/cifar_fgsm_pgd
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("fgsm_pgd")
