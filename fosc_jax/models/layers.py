"""Building blocks shared by every architecture: BatchNorm settings and input normalisation.

All models take NHWC float inputs in [0, 1]; any mean/std normalisation happens inside the
model (see ``normalize``) so attacks can clip to the pixel box without knowing about it.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

BN_MOMENTUM: float = 0.9
BN_EPSILON: float = 1e-5

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)


def batch_norm(train: bool, dtype: Dtype) -> functools.partial:
    """BatchNorm with the project's settings (momentum 0.9, eps 1e-5, float32 params).

    In training mode it normalises with batch statistics and updates ``batch_stats``;
    otherwise it uses the running averages.
    """
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
    )


HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def bias_free_conv(features: int, kernel: int, strides: int, dtype: Dtype) -> nn.Conv:
    """k x k conv without bias (followed by BN in the residual nets), He fan-out init;
    SAME padding for k > 1, VALID for 1 x 1 projections."""
    return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                   padding="SAME" if kernel > 1 else "VALID", use_bias=False, dtype=dtype,
                   param_dtype=jnp.float32, kernel_init=HE_FAN_OUT)


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max-pool with stride 2 (VALID: an odd last row/column is dropped, as nn.max_pool).

    Written as reshape + max instead of ``nn.max_pool``: on XLA:CPU the latter's backward
    lowers to select-and-scatter, which dominated the MNIST attack step (BENCHMARKS.md).
    The value is identical; the gradient differs from select-and-scatter only where two
    window entries tie for the maximum (split equally here, all to the first there), and
    after a ReLU the common tie (all zeros) carries zero gradient either way.
    """
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def normalize(x: jnp.ndarray, mean: Sequence[float], std: Sequence[float]) -> jnp.ndarray:
    """Per-channel (x - mean) / std on the last axis; constants, no parameters."""
    mean_arr = jnp.asarray(mean, dtype=x.dtype)
    std_arr = jnp.asarray(std, dtype=x.dtype)
    return (x - mean_arr) / std_arr


def check_nhwc(x: jnp.ndarray, model: str, hwc: tuple[int, int, int] | None = None) -> None:
    """Raise ValueError unless ``x`` is a 4-D NHWC batch (of image shape ``hwc`` if given)."""
    if x.ndim != 4:
        raise ValueError(
            f"{model}: x must be a 4-D NHWC batch [B, H, W, C], got shape {tuple(x.shape)}; "
            "add a batch axis (x[None]) or a channel axis (x[..., None])."
        )
    if hwc is not None and tuple(x.shape[1:]) != tuple(hwc):
        raise ValueError(
            f"{model}: x must have image shape {tuple(hwc)} (H, W, C), got {tuple(x.shape[1:])}."
        )
