"""A trained model packaged for evaluation: pure inference-mode logits plus its config."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """A Flax model with its variables, in inference mode (BatchNorm uses running stats).

    ``apply(variables, x)`` is pure and jit-able, so evaluation code can pass ``variables``
    as a jit argument instead of baking the weights into the compiled program as constants;
    ``logits(x)`` is the convenience form for users. Inputs are NHWC in [0, 1].
    """
    model: nn.Module
    variables: Any
    config: Any = None
    epoch: int = 0

    def apply(self, variables: Any, x: Array) -> Array:
        """Logits [B, C] (float32) of inputs ``x`` under ``variables``."""
        return self.model.apply(variables, x, train=False).astype(jnp.float32)

    def logits(self, x: Array) -> Array:
        """Logits [B, C] under this classifier's own variables."""
        return self._jitted_apply(self.variables, x)

    @functools.cached_property
    def _jitted_apply(self):
        return jax.jit(self.apply)

    def logits_fn(self, variables: Any = None):
        """``x -> logits`` closure for the attacks (over ``variables`` or the stored ones)."""
        v = self.variables if variables is None else variables
        return lambda x: self.apply(v, x)
