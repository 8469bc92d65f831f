"""A seconds-sized config for tests: small batch, 3 attack steps, bundled data.

Tests import ``get_config`` and pass it to train.py as ``--config tests/tiny_config.py``;
keeping one config lets the persistent compilation cache share programs across tests.
"""
from fosc_jax.config import base_config


def get_config(defense: str = "dynamic", epochs: int = 1):
    c = base_config()
    c.name = f"tiny_{defense}"
    c.defense.name = defense
    c.model.name = "mnist_cnn"
    c.num_epochs = epochs
    c.defense.t_prime = epochs
    c.defense.fgsm_epochs = 1
    c.defense.curriculum_max_k = 2
    c.attack.num_steps = 3
    c.batch_size = 16
    c.eval.num_examples = 16
    c.eval.batch_size = 8
    c.log_every = 2
    c.quiet = True
    c.data.source = "bundled"
    c.data.train_limit = 64
    return c
