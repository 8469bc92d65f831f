"""Quickstart: TRADES (Zhang et al. 2019) on the MNIST subset shipped in the package, on a CPU.

    python train.py --config configs/quickstart_trades.py

2,000 training images, 4 epochs, eps 0.1 (the paper's 0.3 needs many more epochs before an
MNIST model leaves chance level; at 0.1 a few epochs on a CPU learn a robust model).
"""
from fosc_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "quickstart_trades"
    c.seed = 0

    # Data
    c.data.name = "mnist"
    c.data.source = "bundled"     # 2,000 MNIST training images inside the package
    c.data.augment = "none"

    # Model
    c.model.name = "mnist_cnn"    # the paper's 4-layer CNN

    # Training attack
    c.attack.eps = 0.1            # smaller than the paper's 0.3, see above
    c.attack.step_size = None     # None: eps / 4
    c.attack.num_steps = 10       # K
    c.attack.random_start = True  # TRADES starts at x0 + 0.001 * N(0, 1)
    c.attack.bn_mode = "eval"     # the TRADES reference code attacks in inference mode

    # Defense: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL
    c.defense.name = "trades"
    c.defense.trades_beta = 6.0   # the paper's beta (1 / lambda)
    c.defense.fosc_origin = "clean"  # FOSC (logged) measured from x0
    c.defense.loss_weighting = False

    # Schedule and optimizer: SGD, momentum, L2 weight decay on kernels
    c.num_epochs = 4
    c.batch_size = 64
    c.optim.lr = 0.01
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.lr_drop_epochs = (3,)  # lr x lr_drop_factor from epoch 3
    c.optim.lr_drop_factor = 0.1

    # Per-epoch evaluation and logging
    c.eval.num_examples = 500     # clean / PGD-10 accuracy on 500 test images each epoch
    c.eval.batch_size = 250
    c.log_every = 10              # steps between progress-bar updates
    return c
