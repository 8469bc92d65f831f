"""Pre-activation WideResNet for CIFAR-10 (WRN-34-10 is the "Madry et al." large model)."""

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



class WideBasicBlock(nn.Module):
    """Pre-activation unit: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus a shortcut.

    The shortcut is the identity when shapes match, otherwise a 1x1 strided conv applied to
    the activated input (the common Zagoruyko & Komodakis / PyTorch WRN-34-10 form).
    """

    features: int
    strides: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Apply the unit to an NHWC feature map."""
        norm = batch_norm(train, self.dtype)
        conv = lambda feats, k, s: bias_free_conv(feats, k, s, self.dtype)  # noqa: E731
        act = nn.relu(norm()(x))
        project = x.shape[-1] != self.features or self.strides != 1
        shortcut = conv(self.features, 1, self.strides)(act) if project else x
        y = conv(self.features, 3, self.strides)(act)
        y = nn.relu(norm()(y))
        y = conv(self.features, 3, 1)(y)
        return y + shortcut


class WideResNet(nn.Module):
    """WRN-depth-k: conv3x3(16), three stages of (depth-4)//6 units with widths 16k/32k/64k
    (strides 1, 2, 2), BN-ReLU, global average pool, dense.

    ``WideResNet(depth=34, widen_factor=10)`` has 5 units per stage and widths 160/320/640,
    the CIFAR-10 model of Madry et al. as later papers use it. Differences from Madry's TF
    code: plain ReLU (not leaky 0.1) and 1x1-conv shortcuts (not avg-pool + zero-padding).
    Inputs in [0, 1] are normalised per channel inside the model.
    """

    depth: int = 34
    widen_factor: int = 10
    num_classes: int = 10
    mean: Sequence[float] = CIFAR10_MEAN
    std: Sequence[float] = CIFAR10_STD
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Logits [B, num_classes] float32 for x [B, H, W, 3] in [0, 1]."""
        if self.depth < 10 or (self.depth - 4) % 6 != 0:
            raise ValueError(
                f"WideResNet: depth must be 6n + 4 with n >= 1 (e.g. 16, 28, 34), got {self.depth}."
            )
        if self.widen_factor < 1:
            raise ValueError(f"WideResNet: widen_factor must be >= 1, got {self.widen_factor}.")
        check_nhwc(x, "wide_resnet")
        units = (self.depth - 4) // 6
        x = normalize(x.astype(self.dtype), self.mean, self.std)
        x = bias_free_conv(16, 3, 1, self.dtype)(x)
        for stage, stage_strides in enumerate((1, 2, 2)):
            width = 16 * (2**stage) * self.widen_factor
            for unit in range(units):
                x = WideBasicBlock(width, stage_strides if unit == 0 else 1,
                                   dtype=self.dtype)(x, train=train)
        x = nn.relu(batch_norm(train, self.dtype)()(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(x)
        return x.astype(jnp.float32)
