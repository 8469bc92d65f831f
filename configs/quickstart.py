"""Quickstart: Dynamic AT on the MNIST subset shipped in the package, offline, minutes on a CPU.

    python train.py --config configs/quickstart.py
"""
from fosc_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "quickstart"
    c.data.source = "bundled"
    c.num_epochs = 5
    c.batch_size = 64
    c.defense.t_prime = 4
    c.optim.lr_drop_epochs = (4,)
    c.eval.num_examples = 500
    c.eval.batch_size = 250
    c.log_every = 10
    c.fosc_sample_size = 2000
    return c
