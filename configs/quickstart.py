"""Quickstart: Dynamic AT on the MNIST subset shipped in the package, offline, minutes on a CPU.

    python train.py --config configs/quickstart.py

2,000 training images, 4 epochs, eps 0.1 (the paper's 0.3 needs many more epochs before an
MNIST model leaves chance level; at 0.1 a few epochs on a CPU learn a robust model).
"""
from fosc_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "quickstart"
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
    c.attack.random_start = True  # x0 + U(-eps, eps)
    c.attack.bn_mode = "train"    # BatchNorm on the attacked batch's statistics (Madry)

    # Defense
    c.defense.name = "dynamic"
    c.defense.c_max = 0.5         # FOSC threshold at epoch 0
    c.defense.t_prime = 4         # c_t = max(c_max - t * c_max / T', 0) is 0 from epoch T'
    c.defense.fosc_origin = "clean"  # FOSC measured from x0 (released code: "start")
    c.defense.loss_weighting = False  # released code: weight by adversarial CE

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
