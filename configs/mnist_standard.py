"""MNIST: Standard AT (Madry et al.: PGD-10 on every example).

The paper's setting (section 5.1), from fosc_jax.config.mnist_config: 4-layer CNN, eps 0.3,
PGD-10, 50 epochs, BatchNorm in inference mode while attacking.

    python train.py --config configs/mnist_standard.py --workdir runs/mnist_standard
"""
from fosc_jax.config import mnist_config


def get_config():
    return mnist_config("standard")
