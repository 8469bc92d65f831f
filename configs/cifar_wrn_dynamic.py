"""CIFAR-10 WideResNet-34-10 dynamic with Madry's schedule (see fosc_jax/config.py).

    python train.py --config configs/cifar_wrn_dynamic.py --workdir runs/cifar_wrn_dynamic
"""
from fosc_jax.config import cifar_wrn_config


def get_config():
    return cifar_wrn_config("dynamic")
