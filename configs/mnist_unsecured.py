"""MNIST unsecured: the paper's setting (see fosc_jax/config.py: mnist_config).

    python train.py --config configs/mnist_unsecured.py --workdir runs/mnist_unsecured
"""
from fosc_jax.config import mnist_config


def get_config():
    return mnist_config("unsecured")
