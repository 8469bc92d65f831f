"""MNIST: Standard AT (Madry et al.: PGD-10 on every example).

The paper's setting (section 5.1): 4-layer CNN, eps 0.3, 50 epochs.

    python train.py --config configs/mnist_standard.py --workdir runs/mnist_standard
"""
from fosc_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "mnist_standard"
    c.seed = 0

    # Data
    c.data.name = "mnist"
    c.data.source = "tfds"        # or "files:DIR" (local files), "bundled" (MNIST subset)
    c.data.augment = "none"       # no augmentation

    # Model
    c.model.name = "mnist_cnn"    # the paper's 4-layer CNN (conv32-conv64-dense128)

    # Training attack (docs/method.md)
    c.attack.eps = 0.3            # L-inf radius, pixels in [0, 1]
    c.attack.step_size = None     # None: eps / 4
    c.attack.num_steps = 10       # K
    c.attack.random_start = True  # x0 + U(-eps, eps)
    c.attack.bn_mode = "eval"     # BatchNorm in inference mode while attacking, as the
                                  # released code does; "train" collapses every defense
                                  # at eps 0.3 (docs/method.md)

    # Defense
    c.defense.name = "standard"
    c.defense.loss_weighting = False  # released code: weight by adversarial CE

    # Schedule and optimizer: SGD, momentum, L2 weight decay on kernels
    c.num_epochs = 50
    c.batch_size = 128            # global batch, split over devices
    c.optim.lr = 0.01
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.lr_drop_epochs = (20, 40)  # lr x lr_drop_factor at these epochs
    c.optim.lr_drop_factor = 0.1
    return c
