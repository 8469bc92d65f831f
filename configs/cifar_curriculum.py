"""CIFAR-10: Curriculum AT (Cai et al. 2018), fixed schedule.

The paper's setting (section 5.1), from fosc_jax.config.cifar_config: 8-layer CNN,
eps 8/255, PGD-10, 120 epochs, crop and flip.

    python train.py --config configs/cifar_curriculum.py --workdir runs/cifar_curriculum
"""
from fosc_jax.config import cifar_config


def get_config():
    return cifar_config("curriculum")
