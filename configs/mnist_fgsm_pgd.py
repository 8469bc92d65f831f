"""MNIST fgsm_pgd: the paper's setting (see fosc_jax/config.py: mnist_config).

    python train.py --config configs/mnist_fgsm_pgd.py --workdir runs/mnist_fgsm_pgd
"""
from fosc_jax.config import mnist_config


def get_config():
    return mnist_config("fgsm_pgd")
