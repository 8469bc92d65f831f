"""The paper's experiments as the reproduction runs them: what sets MNIST and CIFAR-10 apart.

``python -m fosc_jax.reproduce NAME`` looks up ``EXPERIMENTS[NAME]``; the pipeline, the report
and the command take everything that differs between the two from it: the data set and where
its folder comes from, the runs, scales and smoke scale (read from the experiment's plan
module when asked, so tests can patch them), the paper's schedule and numbers, the eps
sweep, the stages it offers and the prose of RESULTS.md.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Mapping, Optional

import ml_collections

from fosc_jax.reproduce import cifar_plan, plan
from fosc_jax.reproduce.plan import Run, Scale, Schedule

# Every stage in the order it runs; an experiment offers a subset.
ALL_STAGES = ("train", "export", "eval", "autoattack", "section3", "convergence", "report")
ATTACK_KEYS = ("clean", "fgsm", "pgd10", "pgd20", "cw")


def _paper(table: Mapping[str, tuple]) -> dict:
    """{defense: {metric: accuracy %}} from rows of (clean, FGSM, PGD-10, PGD-20, CW-inf)."""
    return {d: dict(zip(ATTACK_KEYS if len(v) == 5 else ATTACK_KEYS[1:], v))
            for d, v in table.items()}


@dataclasses.dataclass(frozen=True)
class Prose:
    """The sentences of RESULTS.md that differ between experiments."""
    attack_row: str          # setup table: the training attack and optimiser, paper | here
    bn_row: str              # setup table: BatchNorm in the training attack
    blackbox_row: str        # setup table: the surrogate ({epochs}: its epochs)
    blackbox_note: str       # under the black-box table's heading
    scale_note: str          # why a smaller scale falls short of the paper's numbers
    data_files: str          # "the four MNIST IDX files": what a GPU run needs besides the code


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One half of the paper's evaluation (a data set, its runs and its tables)."""
    name: str                       # the command's argument
    title: str                      # the data set in prose
    dataset: str                    # fosc_jax.data name
    plan: types.ModuleType          # RUNS, SCALES, SMOKE and run_config
    schedule: Schedule              # the paper's training schedule
    stages: tuple[str, ...]         # the stages it has, in ALL_STAGES order
    paper_white: Mapping[str, Mapping[str, float]]   # Table 1, accuracy %
    paper_black: Mapping[str, Mapping[str, float]]   # Table 2, accuracy %
    sweep_eps: tuple[float, ...]    # Figure 4a: PGD-10 at these test eps
    eps_label: str                  # the training eps in prose
    data_env: str                   # the variable --data defaults to
    data_help: str                  # what --data names
    prose: Prose
    readme_markers: tuple[str, str]
    bundled: bool = False           # --data bundled (the MNIST subset in the package)
    eval_batch: int = 500           # evaluation batch (the random starts depend on it)
    surrogate_attacks: Optional[tuple[str, ...]] = None  # its own evaluation (None: the scale's)
    seed_stats: bool = False        # Dynamic against Standard over seeds
    collapse_note: bool = False     # the eps 0.3 collapse section

    @property
    def runs(self) -> tuple[Run, ...]:
        return self.plan.RUNS

    @property
    def scales(self) -> Mapping[str, Scale]:
        return self.plan.SCALES

    @property
    def smoke(self) -> Mapping:
        return self.plan.SMOKE

    def config(self, run: Run, scale: Scale, source: str) -> ml_collections.ConfigDict:
        """The training config of ``run`` at ``scale``."""
        return self.plan.run_config(run, scale, source)


MNIST = Experiment(
    name="mnist", title="MNIST", dataset="mnist", plan=plan, schedule=plan.MNIST_SCHEDULE,
    stages=ALL_STAGES,
    paper_white=_paper({"unsecured": (99.20, 14.04, 0.0, 0.0, 0.0),
                        "standard": (97.61, 94.71, 91.21, 90.62, 91.03),
                        "curriculum": (98.62, 95.51, 91.24, 90.65, 91.12),
                        "dynamic": (97.96, 95.34, 91.63, 91.27, 91.47)}),
    paper_black=_paper({"standard": (96.12, 95.73, 95.73, 97.20),
                        "dynamic": (97.60, 97.01, 96.97, 98.36)}),
    sweep_eps=(0.1, 0.2, 0.3, 0.4), eps_label="0.3", data_env="FOSC_JAX_MNIST_DIR",
    data_help="the four MNIST IDX files, .gz or not",
    prose=Prose(
        attack_row="| eps, PGD-10 step eps/4 with random start, batch 128, SGD momentum 0.9, "
                   "weight decay 1e-4 | 0.3 | same |",
        bn_row="| BatchNorm in the training attack | not stated (released code: inference "
               "mode) | inference mode (see the collapse section) |",
        blackbox_row="| black-box | ResNet-50 for CIFAR; defense architecture for MNIST, "
                     "Standard AT | the MNIST CNN trained with Standard AT, seed 100 |",
        blackbox_note="The four attacks crafted once on the surrogate and scored on each "
                      "defense; the paper reports black-box numbers for Standard and Dynamic "
                      "only.",
        scale_note="MNIST adversarial training at eps 0.3 is known to keep improving for tens "
                   "of thousands of steps.",
        data_files="the four MNIST IDX files"),
    readme_markers=("<!-- reproduction table: start (written by python -m fosc_jax.reproduce) "
                    "-->", "<!-- reproduction table: end -->"),
    bundled=True, seed_stats=True, collapse_note=True)

CIFAR = Experiment(
    name="cifar", title="CIFAR-10", dataset="cifar10", plan=cifar_plan,
    schedule=cifar_plan.CIFAR_SCHEDULE, stages=("train", "export", "eval", "autoattack", "report"),
    paper_white=_paper({"unsecured": (89.39, 2.2, 0.0, 0.0, 0.0),
                        "standard": (66.31, 48.65, 44.39, 40.02, 36.33),
                        "curriculum": (72.40, 50.47, 45.54, 40.12, 35.77),
                        "dynamic": (72.17, 52.81, 48.06, 42.40, 37.26)}),
    paper_black={},   # Table 2's CIFAR-10 numbers are not transcribed (docs/method.md)
    sweep_eps=tuple(k / 255 for k in (2, 4, 6, 8, 10, 12)), eps_label="8/255",
    data_env="FOSC_JAX_CIFAR10_DIR",
    data_help="the CIFAR-10 binary release, or one .npz with x_train, y_train, x_test, y_test",
    prose=Prose(
        attack_row="| eps, PGD-10 step eps/4 with random start, batch 128, SGD lr 0.01, "
                   "momentum 0.9, weight decay 1e-4, 4-pixel pad + crop + flip | 8/255 | same |",
        bn_row="| BatchNorm in the training attack | not stated | train mode (the attacked "
               "batch's statistics, Madry's choice) |",
        blackbox_row="| black-box | ResNet-50, training not stated | ResNet-50 trained "
                     "naturally (no attack), seed 100, SGD lr 0.1, weight decay 5e-4, "
                     "{epochs} epochs, lr drops at the defenses' fractions |",
        blackbox_note="The attacks crafted once on the ResNet-50 surrogate and scored on each "
                      "defense (n below). The paper's Table 2 reports Standard and Dynamic; "
                      "its CIFAR-10 numbers are not transcribed here, so the cells hold ours "
                      "only.",
        scale_note="CIFAR-10 adversarial training needs the paper's tens of epochs over all "
                   "50,000 images to approach its numbers.",
        data_files="CIFAR-10 (the binary release or an .npz)"),
    readme_markers=("<!-- reproduction table cifar: start (written by python -m "
                    "fosc_jax.reproduce cifar) -->", "<!-- reproduction table cifar: end -->"),
    eval_batch=200, surrogate_attacks=())

EXPERIMENTS = {e.name: e for e in (MNIST, CIFAR)}


def of(run: Run) -> Experiment:
    """The experiment ``run`` belongs to."""
    return EXPERIMENTS[run.experiment]


def run_config(run: Run, scale: Scale, source: str) -> ml_collections.ConfigDict:
    """The training config of ``run`` (of any experiment) at ``scale``, reading ``source``."""
    return of(run).config(run, scale, source)
