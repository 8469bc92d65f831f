"""MNIST: Unsecured (natural training, no attack).

The paper's setting (section 5.1), from fosc_jax.config.mnist_config: 4-layer CNN, eps 0.3,
PGD-10, 50 epochs, BatchNorm in inference mode while attacking.

    python train.py --config configs/mnist_unsecured.py --workdir runs/mnist_unsecured
"""
from fosc_jax.config import mnist_config


def get_config():
    return mnist_config("unsecured")
