"""CIFAR-10 WideResNet-34-10: Standard AT (Madry et al.: PGD-10 on every example).

Madry et al.'s schedule, from fosc_jax.config.cifar_wrn_config: lr 0.1, / 10 at 50% and 75%
of 120 epochs, weight decay 2e-4.

    python train.py --config configs/cifar_wrn_standard.py --workdir runs/cifar_wrn_standard
"""
from fosc_jax.config import cifar_wrn_config


def get_config():
    return cifar_wrn_config("standard")
