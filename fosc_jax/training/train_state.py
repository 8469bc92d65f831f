"""The training state (what a checkpoint holds) and the optimizer that updates it."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import ml_collections
import optax
from jax import Array

from fosc_jax import schedules


@flax.struct.dataclass
class TrainState:
    """Everything a resume needs; a pytree of arrays so Orbax can save it whole."""
    step: Array               # int32 global step
    epoch: Array              # int32 epochs completed
    params: Any
    batch_stats: Any
    opt_state: Any
    key: Array                # uint32 [2] raw key; per-step keys are fold_in(key, step)
    defense_state: Any        # dict of scalars the defense carries across epochs ({}: none)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """SGD with momentum and coupled L2 weight decay on kernels (Keras/PyTorch style)."""
    lr = schedules.learning_rate(config.optim.lr, config.optim.lr_drop_epochs,
                                 config.optim.lr_drop_factor, steps_per_epoch)
    kernels_only = lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)  # noqa: E731
    return optax.chain(optax.add_decayed_weights(config.optim.weight_decay, mask=kernels_only),
                       optax.sgd(lr, momentum=config.optim.momentum))
