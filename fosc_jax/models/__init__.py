"""Model registry: ``get_model(name)`` builds any architecture used by the paper.

Call convention (every model has BatchNorm, hence ``batch_stats``)::

    variables = model.init(key, x, train=False)
    logits = model.apply(variables, x, train=False)                       # inference
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])

Inputs are NHWC floats in [0, 1]; logits are float32 [B, num_classes] whatever the compute
``dtype``; parameters are always float32.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from fosc_jax.models.cifar_cnn import CifarCNN
from fosc_jax.models.mnist_cnn import MnistCNN
from fosc_jax.models.resnet import ResNet
from fosc_jax.models.wide_resnet import WideResNet

_FACTORIES: dict[str, Callable[[int, Any], nn.Module]] = {
    "mnist_cnn": lambda n, dt: MnistCNN(num_classes=n, padding="SAME", dtype=dt),
    "mnist_cnn_valid": lambda n, dt: MnistCNN(num_classes=n, padding="VALID", dtype=dt),
    "cifar_cnn": lambda n, dt: CifarCNN(num_classes=n, dtype=dt),
    "wrn34_10": lambda n, dt: WideResNet(depth=34, widen_factor=10, num_classes=n, dtype=dt),
    "wrn16_1": lambda n, dt: WideResNet(depth=16, widen_factor=1, num_classes=n, dtype=dt),
    "resnet50": lambda n, dt: ResNet(stage_sizes=(3, 4, 6, 3), width=64, num_classes=n, dtype=dt),
}

MODEL_NAMES: tuple[str, ...] = tuple(_FACTORIES)

_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def get_model(name: str, *, num_classes: int = 10, dtype: Any = jnp.float32) -> nn.Module:
    """Build the model registered as ``name`` with compute ``dtype`` (params stay float32)."""
    if name not in _FACTORIES:
        raise ValueError(
            f"get_model: unknown name {name!r}; accepted names: {', '.join(MODEL_NAMES)}."
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"get_model: num_classes must be an int >= 2, got {num_classes!r}.")
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in _DTYPES]:
        raise ValueError(
            f"get_model: dtype must be one of float32, bfloat16, float16, got {dtype!r}."
        )
    return _FACTORIES[name](num_classes, jnp.dtype(dtype))


__all__ = ["MODEL_NAMES", "get_model", "MnistCNN", "CifarCNN", "WideResNet", "ResNet"]
