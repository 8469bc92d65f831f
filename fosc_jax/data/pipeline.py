"""On-device input pipeline: pixel scaling, epoch shuffling and CIFAR augmentation.

Pure functions of (key, arrays); all jit-able with static shapes. Arguments documented as
static must be Python ints (mark them static when jitting a caller).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]
CIFAR_PAD: int = 4


def unit_float(x):
    """Images as float32 in [0, 1]: uint8 pixels are divided by 255, floats (already in
    [0, 1]) are cast. Works on NumPy and JAX arrays alike (the one place pixels are scaled)."""
    return x.astype("float32") / 255.0 if x.dtype == np.uint8 else x.astype("float32")


def to_float(x: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [0, 1] (x / 255)."""
    if x.dtype != jnp.uint8:
        raise ValueError(f"to_float: x must be uint8 pixels, got {x.dtype}; it is already scaled "
                         "if it is a float array.")
    return unit_float(x)


def epoch_permutation(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    """Shuffled example indices int32 [n // batch_size, batch_size]; the remainder is dropped.

    ``n`` and ``batch_size`` are static. Every index appears at most once per epoch.
    """
    if not isinstance(n, int) or not isinstance(batch_size, int):
        raise ValueError(f"epoch_permutation: n and batch_size must be Python ints (static), got "
                         f"{type(n).__name__} and {type(batch_size).__name__}.")
    if batch_size < 1 or n < batch_size:
        raise ValueError(f"epoch_permutation: need 1 <= batch_size <= n, got batch_size="
                         f"{batch_size}, n={n}; lower batch_size.")
    steps = n // batch_size
    perm = jax.random.permutation(key, n)[: steps * batch_size]
    return perm.reshape(steps, batch_size).astype(jnp.int32)


def _check_batch(x: jax.Array, fn: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{fn}: x must be a 4-D NHWC batch, got shape {tuple(x.shape)}.")


def crop_and_flip(
    x: jax.Array, offsets: jax.Array, flips: jax.Array, *, pad: int = CIFAR_PAD
) -> jax.Array:
    """Zero-pad each image by ``pad``, crop back to HxW at ``offsets`` [B, 2] (row, col in
    [0, 2*pad]) and mirror left-right where ``flips`` [B] is true. Deterministic core of
    ``augment_cifar``, exposed so tests can compare against numpy for given offsets."""
    _check_batch(x, "crop_and_flip")
    b, h, w, c = x.shape
    if offsets.shape != (b, 2) or flips.shape != (b,):
        raise ValueError(f"crop_and_flip: offsets must be [{b}, 2] and flips [{b}], got "
                         f"{tuple(offsets.shape)} and {tuple(flips.shape)}.")
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(img: jax.Array, off: jax.Array, flip: jax.Array) -> jax.Array:
        crop = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
        return jnp.where(flip, crop[:, ::-1, :], crop)

    return jax.vmap(one)(padded, offsets.astype(jnp.int32), flips.astype(bool))


def augment_cifar(key: jax.Array, x: jax.Array) -> jax.Array:
    """Random 4-pixel zero-pad crop + random horizontal flip, independently per example."""
    _check_batch(x, "augment_cifar")
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (x.shape[0], 2), 0, 2 * CIFAR_PAD + 1, dtype=jnp.int32)
    flips = jax.random.bernoulli(k_flip, 0.5, (x.shape[0],))
    return crop_and_flip(x, offsets, flips, pad=CIFAR_PAD)


def augment_none(key: jax.Array, x: jax.Array) -> jax.Array:
    """Identity augmentation (MNIST); same signature as ``augment_cifar``."""
    del key
    return x


_AUGMENTS: dict[str, AugmentFn] = {"none": augment_none, "cifar": augment_cifar}
AUGMENT_NAMES: tuple[str, ...] = tuple(_AUGMENTS)


def get_augment(name: str) -> AugmentFn:
    """The augmentation ``(key, x) -> x`` registered as ``name`` ("none" or "cifar")."""
    if name not in _AUGMENTS:
        raise ValueError(
            f"get_augment: unknown name {name!r}; accepted: {', '.join(AUGMENT_NAMES)}."
        )
    return _AUGMENTS[name]
