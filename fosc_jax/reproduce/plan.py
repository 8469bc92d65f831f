"""What the reproduction runs: runs, scales and the paper's schedule compressed to a scale;
the MNIST table's runs and scales (CIFAR-10's are in :mod:`fosc_jax.reproduce.cifar_plan`).

A scale compresses the paper's setting (MNIST: 60,000 images, 50 epochs, lr / 10 at epochs 20
and 40, T' = 40, full test set) in proportion: the lr drops and T' sit at the same fractions
of the epoch budget, the fixed curriculum raises k every epochs / (K_max + 1) epochs, and eps,
the training attack, batch 128 and the evaluation attacks stay the paper's. Every defense gets
the same budget (images x epochs).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import ml_collections

from fosc_jax.config import mnist_config


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The paper's training schedule of one data set (section 5.1)."""
    train_images: int
    epochs: int
    lr_drops: tuple[int, ...]
    t_prime: int
    fgsm_epochs: int = 20          # FGSM-then-PGD: FGSM for the first 20 epochs (MNIST)

    def compress(self, paper_epoch: int, budget: int) -> int:
        """An epoch of the paper's schedule at the same fraction of a ``budget``-epoch run."""
        return max(1, round(paper_epoch * budget / self.epochs))


MNIST_SCHEDULE = Schedule(train_images=60_000, epochs=50, lr_drops=(20, 40), t_prime=40)
PAPER_EPOCHS = MNIST_SCHEDULE.epochs
PAPER_LR_DROPS = MNIST_SCHEDULE.lr_drops
PAPER_T_PRIME = MNIST_SCHEDULE.t_prime


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much of the paper's experiment to run."""
    name: str
    train_images: Optional[int]   # None: the whole training set
    epochs: int
    test_images: Optional[int]    # None: the full 10,000
    sweep_images: int             # test images for the eps sweep (PGD-10 at several eps)
    figure_images: int            # test images for Figure 1a
    eval_per_epoch: int           # test subset for the per-epoch clean / PGD-10 numbers
    demo_epochs: int              # epochs of the run without the collapse remedy (MNIST)
    about: str
    # Stage autoattack (both experiments); convergence and section3 are MNIST's only.
    autoattack_images: int = 1_000   # test images for AutoAttack (each defense's models):
    autoattack_pool: Optional[int] = 5_000  # the first N of this seeded subset (None: all)
    autoattack_budget: str = "cpu"   # "standard" or "cpu" (labelled NOT standard)
    # FOSC as an evaluation diagnostic (stage "convergence"): PGD-20 then the standard
    # AutoAttack on this many seeded test images of every defense model.
    convergence_images: Optional[int] = 300
    convergence_budget: str = "standard"
    # The paper's Section 3 (Figures 2 and 3) trains 10 runs, several with 20-40 attack
    # steps (about 20 Standard runs of work), so it has its own, smaller budget.
    s3_train_images: Optional[int] = 6_000
    s3_epochs: int = 12
    s3_test_images: Optional[int] = 2_000   # cross-test images per Section 3 model
    # The black-box transfer pass scores the first N of the evaluation subset (None: all);
    # the surrogate's per-epoch test subset (None: eval_per_epoch; 0: none) and epochs
    # (None: the scale's; its lr drops scale with its own budget).
    blackbox_images: Optional[int] = None
    surrogate_eval_per_epoch: Optional[int] = None
    surrogate_epochs: Optional[int] = None
    # The evaluation attacks, white-box and black-box (a smoke scale may keep fewer).
    attacks: tuple[str, ...] = ("fgsm", "pgd10", "pgd20", "cw")

    def epochs_of(self, run: "Run") -> int:
        """The number of epochs ``run`` trains for at this scale."""
        if run.study == "section3":
            return self.s3_epochs
        if run.role == "surrogate" and self.surrogate_epochs is not None:
            return self.surrogate_epochs
        return self.demo_epochs if run.role == "demo" else self.epochs

    def budget_of(self, run: "Run") -> int:
        """The epoch budget ``run``'s schedule (lr drops, T') is compressed to: its own
        epochs, but the table's for the short demo run."""
        return self.epochs if run.role == "demo" else self.epochs_of(run)


SCALES = {
    "cpu": Scale("cpu", train_images=10_000, epochs=20, test_images=None, sweep_images=1_000,
                 figure_images=1_000, eval_per_epoch=500, demo_epochs=3,
                 about="the whole table in about two hours on a 2-core CPU"),
    "paper": Scale("paper", train_images=None, epochs=PAPER_EPOCHS, test_images=None,
                   sweep_images=10_000, figure_images=10_000, eval_per_epoch=1_000,
                   demo_epochs=5, about="the paper's full settings; meant for one GPU",
                   autoattack_images=10_000, autoattack_budget="standard", autoattack_pool=None,
                   convergence_images=None,
                   s3_train_images=None, s3_epochs=PAPER_EPOCHS, s3_test_images=None),
}
# --smoke shrinks any scale to this (CI runs it on the bundled MNIST subset).
SMOKE = dict(train_images=128, epochs=2, test_images=100, sweep_images=50, figure_images=50,
             eval_per_epoch=20, demo_epochs=1, autoattack_images=20, autoattack_budget="cpu",
             autoattack_pool=100, convergence_images=20, convergence_budget="cpu",
             s3_train_images=128, s3_epochs=2, s3_test_images=50)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the table."""
    name: str
    defense: str
    seed: int
    role: str = "defense"         # "defense", "surrogate" (black-box source) or "demo"
    bn_mode: Optional[str] = None  # None: the MNIST config's (inference-mode BN in the attack)
    study: str = "table"           # "table" (Table 1, seeds) or "section3" (Figures 2 and 3)
    steps: Optional[int] = None    # training attack's steps (None: the config's 10)
    step_fraction: Optional[float] = None  # training attack's step / eps (None: 1/4)
    sweep: Optional[str] = None    # Section 3: "step_size", "num_steps" or "fgsm"
    model: Optional[str] = None    # None: the setting's model (the CIFAR surrogate: resnet50)
    experiment: str = "mnist"      # the experiment it belongs to (reproduce/experiments.py)


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
    # Seeds 2-4 of Standard and Dynamic (issue 19), alternating so that an interrupted
    # reproduction has balanced seed counts.
    *(Run(f"{d}_s{s}", d, s) for s in (2, 3, 4) for d in ("standard", "dynamic")),
    # Section 3. Figure 2: Standard AT with 20 steps of eps, eps/2, eps/4, eps/8, and with
    # step eps/6 and 10, 20, 30, 40 steps. Figure 3: PGD-10 against FGSM-then-PGD.
    *(Run(f"s3_step_eps{d}", "standard", 0, study="section3", steps=20, step_fraction=1 / d,
          sweep="step_size") for d in (1, 2, 4, 8)),
    *(Run(f"s3_steps{k}", "standard", 0, study="section3", steps=k, step_fraction=1 / 6,
          sweep="num_steps") for k in (10, 20, 30, 40)),
    Run("s3_pgd", "standard", 0, study="section3", sweep="fgsm"),
    Run("s3_fgsm_pgd", "fgsm_pgd", 0, study="section3", sweep="fgsm"),
)


def run_config(run: Run, scale: Scale, source: str) -> ml_collections.ConfigDict:
    """The paper's MNIST config for ``run``, compressed to ``scale``, reading ``source``."""
    return compressed_config(mnist_config, "mnist", MNIST_SCHEDULE, "first", run, scale, source)


def compressed_config(setting: Callable[[str], ml_collections.ConfigDict], prefix: str,
                      paper: Schedule, subset: str, run: Run, scale: Scale,
                      source: str) -> ml_collections.ConfigDict:
    """``setting(run.defense)`` (the paper's config) for ``run`` at ``scale``: its images
    (the ``subset`` rule picks which), epochs, and the lr drops, T' and FGSM epochs of the
    ``paper`` schedule at the same fractions of the scale's epoch budget."""
    c = setting(run.defense)
    c.name = f"{prefix}_{run.name}"
    c.seed = run.seed
    c.data.source = source
    section3 = run.study == "section3"
    images = scale.s3_train_images if section3 else scale.train_images
    c.data.train_limit = images or 0
    c.data.subset = subset
    epochs = scale.epochs_of(run)
    c.num_epochs = epochs
    budget = scale.budget_of(run)
    c.optim.lr_drop_epochs = tuple(paper.compress(e, budget) for e in paper.lr_drops)
    c.defense.t_prime = min(paper.compress(paper.t_prime, budget), epochs)
    if run.defense == "fgsm_pgd":
        c.defense.fgsm_epochs = paper.compress(paper.fgsm_epochs, budget)
    if run.model is not None:
        c.model.name = run.model
    if run.bn_mode is not None:
        c.attack.bn_mode = run.bn_mode
    if run.steps is not None:
        c.attack.num_steps = run.steps
    if run.step_fraction is not None:
        c.attack.step_size = c.attack.eps * run.step_fraction
    per_epoch = scale.surrogate_eval_per_epoch if run.role == "surrogate" else None
    c.eval.num_examples = scale.eval_per_epoch if per_epoch is None else per_epoch
    c.eval.batch_size = 250
    c.quiet = True
    c.checkpoint_keep = 2
    return c
