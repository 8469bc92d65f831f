"""CIFAR-10: TRADES (Zhang et al. 2019).

The TRADES paper's CIFAR-10 attack (eps 8/255, 10 steps of 0.007, beta 6) on this
project's 8-layer CNN and schedule (120 epochs, lr / 10 at 60 and 100): the loss is
CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL.

    python train.py --config configs/cifar_trades.py --workdir runs/cifar_trades
"""
from fosc_jax.config import cifar_config


def get_config():
    c = cifar_config("trades")
    c.attack.step_size = 0.007    # the TRADES reference code's step
    c.attack.bn_mode = "eval"     # the reference code attacks in inference mode
    return c
