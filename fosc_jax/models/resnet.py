"""Bottleneck ResNet (ResNet-50) adapted to 32x32 CIFAR inputs: the black-box surrogate."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from fosc_jax.models.layers import (
    bias_free_conv,
    CIFAR10_MEAN,
    CIFAR10_STD,
    Dtype,
    batch_norm,
    check_nhwc,
    normalize,
)

EXPANSION: int = 4


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1(4x)-BN, add shortcut, ReLU.

    The shortcut is a 1x1 strided conv + BN when the shape changes, else the identity.
    """

    planes: int
    strides: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Apply the block to an NHWC feature map."""
        norm = batch_norm(train, self.dtype)
        conv = lambda feats, k, s: bias_free_conv(feats, k, s, self.dtype)  # noqa: E731
        out_feats = self.planes * EXPANSION
        y = nn.relu(norm()(conv(self.planes, 1, 1)(x)))
        y = nn.relu(norm()(conv(self.planes, 3, self.strides)(y)))
        y = norm()(conv(out_feats, 1, 1)(y))
        if x.shape[-1] != out_feats or self.strides != 1:
            x = norm()(conv(out_feats, 1, self.strides)(x))
        return nn.relu(y + x)


class ResNet(nn.Module):
    """Bottleneck ResNet for CIFAR: 3x3 stem conv (stride 1, no max-pool), four stages
    (bottleneck widths width * 1/2/4/8, outputs 4x that, strides 1/2/2/2), global average
    pool, dense.

    ``stage_sizes=(3, 4, 6, 3), width=64`` is ResNet-50. Inputs in [0, 1] are normalised per channel
    inside the model.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    num_classes: int = 10
    mean: Sequence[float] = CIFAR10_MEAN
    std: Sequence[float] = CIFAR10_STD
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Logits [B, num_classes] float32 for x [B, H, W, 3] in [0, 1]."""
        if len(self.stage_sizes) != 4 or min(self.stage_sizes) < 1:
            raise ValueError(
                f"ResNet: stage_sizes must be 4 positive ints, got {tuple(self.stage_sizes)}."
            )
        if self.width < 1:
            raise ValueError(f"ResNet: width must be >= 1, got {self.width}.")
        check_nhwc(x, "resnet")
        x = normalize(x.astype(self.dtype), self.mean, self.std)
        x = bias_free_conv(self.width, 3, 1, self.dtype)(x)
        x = nn.relu(batch_norm(train, self.dtype)()(x))
        for stage, blocks in enumerate(self.stage_sizes):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = Bottleneck(self.width * 2**stage, strides, dtype=self.dtype)(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(x)
        return x.astype(jnp.float32)
