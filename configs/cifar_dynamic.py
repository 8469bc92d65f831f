"""CIFAR-10: Dynamic AT (Wang et al. 2019, Algorithm 1).

The paper's setting (section 5.1), from fosc_jax.config.cifar_config: 8-layer CNN,
eps 8/255, PGD-10, 120 epochs, crop and flip.

    python train.py --config configs/cifar_dynamic.py --workdir runs/cifar_dynamic
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("dynamic")
