"""Quickstart: Dynamic AT on the MNIST subset shipped in the package, offline, minutes on a CPU.

    python train.py --config configs/quickstart.py

2,000 training images, 4 epochs, eps 0.1 (the paper's 0.3 needs many more epochs before an
MNIST model leaves chance level; at 0.1 a few epochs on a CPU learn a robust model). Every
value is fosc_jax.config.quickstart_config's.
"""
from fosc_jax.config import quickstart_config


def get_config():
    return quickstart_config("dynamic")
