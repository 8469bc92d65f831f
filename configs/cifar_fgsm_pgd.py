"""CIFAR-10: FGSM-then-PGD (the paper's section 3.2).

The paper's setting (section 5.1): 8-layer CNN, eps 8/255, 120 epochs.

    python train.py --config configs/cifar_fgsm_pgd.py --workdir runs/cifar_fgsm_pgd
"""
from fosc_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "cifar_fgsm_pgd"
    c.seed = 0

    # Data
    c.data.name = "cifar10"
    c.data.source = "tfds"        # or "files:DIR" (local files), "bundled" (MNIST subset)
    c.data.augment = "cifar"      # 4-pixel pad + random crop + horizontal flip, on device

    # Model
    c.model.name = "cifar_cnn"    # the paper's 8-layer CNN

    # Training attack (docs/method.md)
    c.attack.eps = 8 / 255        # L-inf radius, pixels in [0, 1]
    c.attack.step_size = None     # None: eps / 4
    c.attack.num_steps = 10       # K (PGD-K after the FGSM epochs)
    c.attack.random_start = True  # x0 + U(-eps, eps)
    c.attack.bn_mode = "train"    # BatchNorm on the attacked batch's statistics (Madry)

    # Defense
    c.defense.name = "fgsm_pgd"
    c.defense.t_prime = 100       # unused here; the Dynamic AT value of this setting
    c.defense.fgsm_epochs = 20    # FGSM (one step of eps) in epochs 0-19, then PGD-10
    c.defense.loss_weighting = False  # released code: weight by adversarial CE

    # Schedule and optimizer: SGD, momentum, L2 weight decay on kernels
    c.num_epochs = 120
    c.batch_size = 128            # global batch, split over devices
    c.optim.lr = 0.01
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.lr_drop_epochs = (60, 100)  # lr x lr_drop_factor at these epochs
    c.optim.lr_drop_factor = 0.1
    return c
