"""The paper's MNIST experiment end to end: ``python -m fosc_jax.reproduce mnist``."""
