"""Quickstart: TRADES (Zhang et al. 2019) on the MNIST subset shipped in the package, on a CPU.

    python train.py --config configs/quickstart_trades.py

The quickstart's data, model and schedule (fosc_jax.config.quickstart_config); the loss is
CE(f(x), y) + beta * KL(f(x) || f(x_adv)), beta 6, x_adv maximising the KL.
"""
from fosc_jax.config import quickstart_config


def get_config():
    c = quickstart_config("trades")
    c.attack.bn_mode = "eval"     # the TRADES reference code attacks in inference mode
    return c
