"""MNIST: Curriculum AT (Cai et al. 2018), fixed schedule.

The paper's setting (section 5.1), from fosc_jax.config.mnist_config: 4-layer CNN, eps 0.3,
PGD-10, 50 epochs, BatchNorm in inference mode while attacking.

    python train.py --config configs/mnist_curriculum.py --workdir runs/mnist_curriculum
"""
from fosc_jax.config import mnist_config


def get_config():
    return mnist_config("curriculum")
