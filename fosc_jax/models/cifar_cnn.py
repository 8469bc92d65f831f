"""The paper's 8-layer CIFAR-10 CNN (Wang et al. 2019, section 5.1)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from fosc_jax.models.layers import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Dtype,
    batch_norm,
    check_nhwc,
    max_pool_2x2,
    normalize,
)


class CifarCNN(nn.Module):
    """[conv64, conv64], [conv128, conv128], [conv196, conv196], dense256-BN-ReLU, dense10.

    Every conv is 3x3 SAME - BN - ReLU with a 2x2 max-pool after each pair
    (32 -> 16 -> 8 -> 4, flatten 4*4*196 = 3136). Inputs in [0, 1] are normalised per channel
    inside the model. Layers keep their biases and Keras' initialisers, following the
    (commented-out) Keras version of this network in the authors' released code.
    """

    num_classes: int = 10
    mean: Sequence[float] = CIFAR10_MEAN
    std: Sequence[float] = CIFAR10_STD
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Logits [B, num_classes] float32 for x [B, 32, 32, 3] in [0, 1]."""
        check_nhwc(x, "cifar_cnn", (32, 32, 3))
        norm = batch_norm(train, self.dtype)
        x = normalize(x.astype(self.dtype), self.mean, self.std)
        for feats in (64, 128, 196):
            for _ in range(2):
                x = nn.Conv(feats, (3, 3), padding="SAME", dtype=self.dtype,
                            param_dtype=jnp.float32,
                            kernel_init=nn.initializers.glorot_uniform())(x)
                x = nn.relu(norm()(x))
            x = max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(256, dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=nn.initializers.he_normal())(x)
        x = nn.relu(norm()(x))
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=nn.initializers.glorot_uniform())(x)
        return x.astype(jnp.float32)
