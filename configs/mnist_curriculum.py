"""MNIST curriculum: the paper's setting (see fosc_jax/config.py: mnist_config).

    python train.py --config configs/mnist_curriculum.py --workdir runs/mnist_curriculum
"""
from fosc_jax.config import mnist_config


def get_config():
    return mnist_config("curriculum")
