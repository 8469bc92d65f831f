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

    Two ways to the logits, inputs NHWC in [0, 1]: ``logits(x)`` under the stored variables
    (the ``logits_fn`` an attack takes), and ``apply(variables, x)``, pure in the variables,
    so evaluation code passes them as a jit argument instead of baking the weights into the
    compiled program as constants.
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
