"""CIFAR-10: TRADES (Zhang et al. 2019).

The TRADES paper's CIFAR-10 attack (eps 8/255, 10 steps of 0.007, beta 6) on this
project's 8-layer CNN and schedule (120 epochs, lr / 10 at 60 and 100).

    python train.py --config configs/cifar_trades.py --workdir runs/cifar_trades
"""
from fosc_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "cifar_trades"
    c.seed = 0

    # Data
    c.data.name = "cifar10"
    c.data.source = "tfds"        # or "files:DIR" (local files), "bundled" (MNIST subset)
    c.data.augment = "cifar"      # 4-pixel pad + random crop + horizontal flip, on device

    # Model
    c.model.name = "cifar_cnn"    # the paper's 8-layer CNN

    # Training attack (docs/method.md)
    c.attack.eps = 8 / 255        # L-inf radius, pixels in [0, 1]
    c.attack.step_size = 0.007    # the TRADES reference code's step
    c.attack.num_steps = 10       # K
    c.attack.random_start = True  # TRADES starts at x0 + 0.001 * N(0, 1)
    c.attack.bn_mode = "eval"     # the reference code attacks in inference mode

    # Defense: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL
    c.defense.name = "trades"
    c.defense.trades_beta = 6.0   # the paper's beta (1 / lambda)
    c.defense.fosc_origin = "clean"  # FOSC (logged) measured from x0
    c.defense.t_prime = 100       # unused here

    # Schedule and optimizer: SGD, momentum, L2 weight decay on kernels
    c.num_epochs = 120
    c.batch_size = 128            # global batch, split over devices
    c.optim.lr = 0.01
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.lr_drop_epochs = (60, 100)  # lr x lr_drop_factor at these epochs
    c.optim.lr_drop_factor = 0.1
    return c
