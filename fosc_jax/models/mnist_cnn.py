"""The paper's 4-layer MNIST CNN (Wang et al. 2019, section 5.1)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fosc_jax.models.layers import Dtype, batch_norm, check_nhwc, max_pool_2x2

PADDINGS: tuple[str, ...] = ("SAME", "VALID")


class MnistCNN(nn.Module):
    """conv32(3x3)-BN-ReLU-maxpool2, conv64(3x3)-BN-ReLU-maxpool2, dense128-ReLU, dense10.

    Padding: the authors' released Keras code (YisenWang/dynamic_adv_training, models.py)
    uses ``padding='same'`` for both convs, so the default is ``"SAME"``
    (28 -> 28 -> 14 -> 14 -> 7, flatten 7*7*64 = 3136). ``padding="VALID"`` gives
    28 -> 26 -> 13 -> 11 -> 5, flatten 5*5*64 = 1600. Convs and dense layers keep their
    biases and Keras' initialisers (glorot-uniform; he-normal for the 128-unit layer), as in
    that code. No input normalisation (the Keras code fed raw [0, 1] pixels).
    """

    num_classes: int = 10
    padding: str = "SAME"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Logits [B, num_classes] float32 for x [B, 28, 28, 1] in [0, 1]."""
        if self.padding not in PADDINGS:
            raise ValueError(f"MnistCNN: padding must be one of {PADDINGS}, got {self.padding!r}.")
        check_nhwc(x, "mnist_cnn", (28, 28, 1))
        norm = batch_norm(train, self.dtype)
        conv = lambda feats: nn.Conv(  # noqa: E731
            feats, (3, 3), padding=self.padding, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=nn.initializers.glorot_uniform(),
        )
        x = x.astype(self.dtype)
        for feats in (32, 64):
            x = conv(feats)(x)
            x = nn.relu(norm()(x))
            x = max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(128, dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=nn.initializers.he_normal())(x)
        x = nn.relu(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=nn.initializers.glorot_uniform())(x)
        return x.astype(jnp.float32)
