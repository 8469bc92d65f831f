"""Training: the step's maths (:mod:`.trainer`), how steps run (:mod:`.executors`,
:mod:`.compaction`), the epoch loop (:mod:`.loop`) and what it measures (:mod:`.monitor`).

``train_and_evaluate(config, workdir)`` is the entry point (``train_many(configs, workdirs)``:
K runs in one compiled program, :mod:`.multirun`); ``Trainer`` builds the step for
one config (tests, benchmarks, notebooks).
"""
from fosc_jax.training.loop import load_training_data, train_and_evaluate
from fosc_jax.training.multirun import train_many
from fosc_jax.training.preemption import PreemptionFlag
from fosc_jax.training.trainer import Trainer

__all__ = ["Trainer", "train_and_evaluate", "load_training_data", "PreemptionFlag", "train_many"]
