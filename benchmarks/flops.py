"""FLOP counts of a forward pass and of one adversarial training step.

The forward count walks the model's jaxpr (traced on abstract inputs, nothing runs) and adds
2 * MACs for every convolution and matrix product, using the layers' operand shapes.
Everything else (BatchNorm, ReLU, pooling, softmax) is counted separately as "elementwise":
one FLOP per output element, a rough upper bound that is not included in the headline number.

Training step = attack + update:
  * each attack gradient evaluation (forward + gradient w.r.t. the INPUT only) costs
    ``ATTACK_GRAD_FACTOR`` = 2 forward passes: the backward pass needs the data gradient of
    every layer (same MACs as the forward) but no weight gradients, which both JAX and
    PyTorch autograd skip when differentiating w.r.t. the input alone;
  * the update (forward + data gradients + weight gradients) costs ``UPDATE_FACTOR`` = 3.
PGD-K takes K gradient evaluations; Dynamic PGD takes (loop iterations + 1), the extra one
being the gradient at the random start that the first step uses.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

ATTACK_GRAD_FACTOR: float = 2.0
UPDATE_FACTOR: float = 3.0


@dataclasses.dataclass(frozen=True)
class ForwardFlops:
    """FLOPs of one forward pass of a whole batch."""

    conv: int          # 2 * MACs of all convolutions
    dense: int         # 2 * MACs of all matrix products (dot_general)
    elementwise: int   # one per output element of every other op (BN, ReLU, pool, ...)

    @property
    def matmul(self) -> int:
        """Conv + dense: the headline count."""
        return self.conv + self.dense


def _conv_flops(eqn: Any) -> int:
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    # rhs_spec = (out_feature_dim, in_feature_dim, *spatial_dims) as axis indices.
    rhs_spec = dn.rhs_spec
    in_feats = rhs[rhs_spec[1]]
    window = math.prod(rhs[d] for d in rhs_spec[2:])
    # in_feats is already per group (the kernel holds C_in / groups input channels).
    return 2 * math.prod(out) * in_feats * window


def _dot_flops(eqn: Any) -> int:
    lhs = eqn.invars[0].aval.shape
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    contract = math.prod(lhs[d] for d in lhs_contract)
    return 2 * math.prod(eqn.outvars[0].aval.shape) * contract


def _sub_jaxprs(eqn: Any):
    for value in eqn.params.values():
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if isinstance(item, jex_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex_core.Jaxpr):
                yield item


def _walk(jaxpr: Any, acc: dict[str, int]) -> None:
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        subs = list(_sub_jaxprs(eqn))
        if name == "conv_general_dilated":
            acc["conv"] += _conv_flops(eqn)
        elif name == "dot_general":
            acc["dense"] += _dot_flops(eqn)
        elif subs:
            for sub in subs:   # pjit, custom_jvp_call, remat ...: count the body once
                _walk(sub, acc)
        else:
            acc["elementwise"] += sum(math.prod(v.aval.shape) for v in eqn.outvars
                                      if hasattr(v.aval, "shape"))


def count_fn_flops(fn: Callable[..., Any], *args: Any) -> ForwardFlops:
    """Count conv/dense/elementwise FLOPs of ``fn(*args)`` (args may be ShapeDtypeStructs).

    Loops (while/scan) are counted once, not per iteration: use this on straight-line code.
    """
    closed = jax.make_jaxpr(fn)(*args)
    acc = {"conv": 0, "dense": 0, "elementwise": 0}
    _walk(closed.jaxpr, acc)
    return ForwardFlops(**acc)


def model_forward_flops(model_name: str, input_shape: Sequence[int], batch: int = 1,
                        train: bool = True) -> ForwardFlops:
    """FLOPs of one forward pass of ``fosc_jax.models.get_model(model_name)`` on ``batch``
    images of shape ``input_shape`` (H, W, C)."""
    from fosc_jax.models import get_model

    model = get_model(model_name)
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)

    def forward(v, x):
        if train:
            return model.apply(v, x, train=True, mutable=["batch_stats"])[0]
        return model.apply(v, x, train=False)

    return count_fn_flops(forward, variables, x)


def train_step_flops(forward: int, grad_evals: float) -> float:
    """FLOPs of one training step: ``grad_evals`` attack gradients + one update.

    ``forward`` is the forward FLOPs of the whole batch (``ForwardFlops.matmul``).
    """
    return forward * (ATTACK_GRAD_FACTOR * grad_evals + UPDATE_FACTOR)


def attack_grad_evals(mode: str, num_steps: int, iterations: float | None = None) -> float:
    """Gradient evaluations the attack needs: K for PGD-K, iterations + 1 for Dynamic."""
    if mode == "standard":
        return float(num_steps)
    if iterations is None:
        raise ValueError("dynamic mode needs the number of loop iterations.")
    return float(iterations) + 1.0
