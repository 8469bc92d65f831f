"""Quickstart: Dynamic AT on the MNIST subset shipped in the package, offline, minutes on a CPU.

    python train.py --config configs/quickstart.py

2,000 training images, 4 epochs, eps 0.1 (the paper's 0.3 needs many more epochs before an
MNIST model leaves chance level; at 0.1 a few epochs on a CPU learn a robust model).
"""
from fosc_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "quickstart"
    c.data.source = "bundled"
    c.attack.eps = 0.1
    c.num_epochs = 4
    c.batch_size = 64
    c.defense.t_prime = 4
    c.optim.lr_drop_epochs = (3,)
    c.eval.num_examples = 500
    c.eval.batch_size = 250
    c.log_every = 10
    return c
