"""Quickstart: Dynamic TRADES on the MNIST subset shipped in the package, on a CPU.

TRADES' inner maximisation of KL(f(x) || f(x')) stopped per example once its FOSC falls
to c_t (the linear schedule of Dynamic AT, applied to the KL objective).

    python train.py --config configs/quickstart_dynamic_trades.py

The quickstart's data, model and schedule (fosc_jax.config.quickstart_config).
"""
from fosc_jax.config import quickstart_config


def get_config():
    c = quickstart_config("dynamic_trades")
    c.attack.bn_mode = "eval"     # the TRADES reference code attacks in inference mode
    c.defense.c_max = 0.1         # FOSC threshold at epoch 0, on the KL objective's scale:
                                  # its FOSC is ~3x smaller than the cross-entropy's (p90
                                  # after PGD-10 0.11-0.13 vs 0.30-0.37 on quickstart_trades)
    return c
