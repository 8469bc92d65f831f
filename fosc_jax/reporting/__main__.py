"""``python -m fosc_jax.reporting``: see :mod:`fosc_jax.reporting.cli`."""
import sys

from fosc_jax.reporting.cli import main

main(sys.argv[1:])
