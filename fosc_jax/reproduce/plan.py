"""What the reproduction runs: scales, the runs of the MNIST table and their configs.

A scale compresses the paper's MNIST setting (60,000 images, 50 epochs, lr / 10 at epochs 20
and 40, T' = 40, full test set) in proportion: the lr drops and T' sit at the same fractions
of the epoch budget, the fixed curriculum raises k every epochs / (K_max + 1) epochs, and eps
0.3, PGD-10 with step eps/4, batch 128 and the evaluation attacks stay the paper's. Every
defense gets the same budget (images x epochs).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import ml_collections

from fosc_jax.config import mnist_config

PAPER_EPOCHS = 50
PAPER_LR_DROPS = (20, 40)
PAPER_T_PRIME = 40


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much of the paper's experiment to run."""
    name: str
    train_images: Optional[int]   # None: all 60,000
    epochs: int
    test_images: Optional[int]    # None: the full 10,000
    sweep_images: int             # test images for the eps sweep (PGD-10 at several eps)
    figure_images: int            # test images for Figure 1a
    eval_per_epoch: int           # test subset for the per-epoch clean / PGD-10 numbers
    demo_epochs: int              # epochs of the run without the collapse remedy
    about: str
    autoattack_images: int = 1_000   # test images for AutoAttack (each defense's models)
    autoattack_budget: str = "cpu"   # "standard" or "cpu" (labelled NOT standard)

    def scaled(self, paper_epoch: int) -> int:
        """An epoch of the paper's 50-epoch schedule at this scale's epoch budget."""
        return max(1, round(paper_epoch * self.epochs / PAPER_EPOCHS))


SCALES = {
    "cpu": Scale("cpu", train_images=10_000, epochs=20, test_images=5_000, sweep_images=1_000,
                 figure_images=1_000, eval_per_epoch=500, demo_epochs=3,
                 about="the whole table in about two hours on a 2-core CPU"),
    "paper": Scale("paper", train_images=None, epochs=PAPER_EPOCHS, test_images=None,
                   sweep_images=10_000, figure_images=10_000, eval_per_epoch=1_000,
                   demo_epochs=5, about="the paper's full settings; meant for one GPU",
                   autoattack_images=10_000, autoattack_budget="standard"),
}
# --smoke shrinks any scale to this (CI runs it on the bundled MNIST subset).
SMOKE = dict(train_images=128, epochs=2, test_images=100, sweep_images=50, figure_images=50,
             eval_per_epoch=20, demo_epochs=1, autoattack_images=20, autoattack_budget="cpu")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the table."""
    name: str
    defense: str
    seed: int
    role: str = "defense"         # "defense", "surrogate" (black-box source) or "demo"
    bn_mode: Optional[str] = None  # None: the MNIST config's (inference-mode BN in the attack)


# Training order: cheap and essential first, so an interrupted reproduction has the most
# complete table so far; the second seeds and the no-remedy demo last.
RUNS = (
    Run("unsecured", "unsecured", 0),
    Run("standard_s0", "standard", 0),
    Run("dynamic_s0", "dynamic", 0),
    Run("surrogate", "standard", 100, role="surrogate"),
    Run("curriculum", "curriculum", 0),
    Run("standard_s1", "standard", 1),
    Run("dynamic_s1", "dynamic", 1),
    Run("standard_bn_train", "standard", 0, role="demo", bn_mode="train"),
)


def run_config(run: Run, scale: Scale, source: str) -> ml_collections.ConfigDict:
    """The paper's MNIST config for ``run``, compressed to ``scale``, reading ``source``."""
    c = mnist_config(run.defense)
    c.name = f"mnist_{run.name}"
    c.seed = run.seed
    c.data.source = source
    c.data.train_limit = scale.train_images or 0
    c.data.subset = "first"       # the first N training images (MNIST is not class-sorted)
    epochs = scale.demo_epochs if run.role == "demo" else scale.epochs
    c.num_epochs = epochs
    c.optim.lr_drop_epochs = tuple(scale.scaled(e) for e in PAPER_LR_DROPS)
    c.defense.t_prime = min(scale.scaled(PAPER_T_PRIME), epochs)
    if run.bn_mode is not None:
        c.attack.bn_mode = run.bn_mode
    c.eval.num_examples = scale.eval_per_epoch
    c.eval.batch_size = 250
    c.quiet = True
    c.checkpoint_keep = 2
    return c
