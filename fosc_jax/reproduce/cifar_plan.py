"""What the CIFAR-10 reproduction runs: Table 1's four defenses, the ResNet-50 surrogate of
Table 2, and the scales.

The paper's CIFAR-10 setting (``fosc_jax.config.cifar_config``: 8-layer CNN, eps 8/255,
PGD-10 of step eps/4, 120 epochs, lr / 10 at 60 and 100, T' = 100, pad-crop-flip, attack BN
in train mode) is compressed per scale as MNIST's is (:func:`plan.compressed_config`).
The training subset of a smaller scale is a seeded random one: the JPEG copy of CIFAR-10 is
sorted by class, so the first N images would hold few classes.

The surrogate is a ResNet-50 trained naturally (no attack; docs/method.md, "Choice"): SGD
lr 0.1 and weight decay 5e-4 (the usual ResNet values), the defenses' batch and augmentation,
lr drops at the defenses' fractions of its epochs, and its own seed. It trains for the
defenses' epochs except at the cpu scale, where a ResNet-50 epoch costs 4.5 Standard epochs.
"""
from __future__ import annotations

import ml_collections

from fosc_jax.config import cifar_config
from fosc_jax.reproduce.plan import Run, Scale, Schedule, compressed_config

CIFAR_SCHEDULE = Schedule(train_images=50_000, epochs=120, lr_drops=(60, 100), t_prime=100)
SURROGATE_MODEL = "resnet50"
SURROGATE_LR = 0.1
SURROGATE_WEIGHT_DECAY = 5e-4

SCALES = {
    # Measured on the JPEG copy, 2-core CPU shared with another job (load average about 4):
    # the first epoch of Standard took 118 s (13 img/s; 141 s with setup and the per-epoch
    # test), of Dynamic 107 s, of the surrogate 532 s (3 img/s; its second epoch 539 s).
    # Estimated from these: training about 58 min (Unsecured and Curriculum at the
    # pipeline's 0.2 and 0.55 Standard epochs), evaluation about 36 min (81 attack steps an
    # image white-box, 60 for the sweep, 61 ResNet-50 steps black-box, at the 100 and 9
    # image-steps a second measured for the CNN and the ResNet-50 under the same load).
    "cpu": Scale("cpu", train_images=1_536, epochs=6, test_images=300, sweep_images=100,
                 figure_images=200, eval_per_epoch=200, demo_epochs=0,
                 blackbox_images=100, surrogate_eval_per_epoch=0, surrogate_epochs=2,
                 autoattack_images=100, autoattack_pool=300, autoattack_budget="cpu",
                 about="1,536 training images x 6 epochs (the ResNet-50 surrogate 2), 300 "
                       "test images (black-box and AutoAttack, cpu budget, on 100); measured "
                       "on a shared 2-core CPU: 118 s per Standard epoch, 540 s per surrogate "
                       "epoch, so about 1.6 hours for the table and 20 min more for "
                       "AutoAttack (estimated)"),
    "paper": Scale("paper", train_images=None, epochs=CIFAR_SCHEDULE.epochs, test_images=None,
                   sweep_images=10_000, figure_images=10_000, eval_per_epoch=1_000,
                   demo_epochs=0, autoattack_images=10_000, autoattack_pool=None,
                   autoattack_budget="standard",
                   about="the paper's full CIFAR-10 settings; meant for one "
                                        "GPU (estimated 35-45 min on an H100/H200)"),
}
# --smoke: one training step per run, a few test images and one attack (tests). Compiling
# dominates its time (the ResNet-50's training step alone takes about a minute on a CPU, each
# attack crafted on it 5-60 s), so every test subset has one size and the programs compiled
# for one are reused; PGD-10 still runs in the per-epoch test, the sweep and the checks.
SMOKE = dict(train_images=128, epochs=1, test_images=16, sweep_images=16, figure_images=16,
             eval_per_epoch=16, demo_epochs=0, blackbox_images=16, surrogate_eval_per_epoch=0,
             surrogate_epochs=None, attacks=("fgsm",), autoattack_images=16, autoattack_pool=16,
             autoattack_budget="cpu")

# Training order: the cheapest and the most essential first (Unsecured, Standard, Dynamic),
# then the surrogate the black-box pass needs, then Curriculum.
RUNS = (
    Run("unsecured", "unsecured", 0, experiment="cifar"),
    Run("standard", "standard", 0, experiment="cifar"),
    Run("dynamic", "dynamic", 0, experiment="cifar"),
    Run("surrogate", "unsecured", 100, role="surrogate", model=SURROGATE_MODEL,
        experiment="cifar"),
    Run("curriculum", "curriculum", 0, experiment="cifar"),
)


def run_config(run: Run, scale: Scale, source: str) -> ml_collections.ConfigDict:
    """The paper's CIFAR-10 config for ``run``, compressed to ``scale``, reading ``source``."""
    c = compressed_config(cifar_config, "cifar", CIFAR_SCHEDULE, "random", run, scale, source)
    if run.role == "surrogate":
        c.optim.lr = SURROGATE_LR
        c.optim.weight_decay = SURROGATE_WEIGHT_DECAY
    return c
