"""Tests for fosc_jax.models: parameter counts derived by hand, shapes, dtypes, BatchNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax.models import MODEL_NAMES, get_model
from fosc_jax.models.resnet import ResNet
from fosc_jax.models.wide_resnet import WideResNet

MNIST_SHAPE = (28, 28, 1)
CIFAR_SHAPE = (32, 32, 3)


# ---- hand counting helpers: one line of arithmetic per layer kind ----------------------------
def conv(k: int, cin: int, cout: int, bias: bool) -> int:
    """k*k*cin*cout kernel weights (+ cout biases)."""
    return k * k * cin * cout + (cout if bias else 0)


def dense(cin: int, cout: int) -> int:
    """cin*cout weights + cout biases."""
    return cin * cout + cout


def bn(c: int) -> int:
    """BatchNorm scale + bias (params) or mean + var (batch_stats): 2 per channel."""
    return 2 * c


def mnist_cnn_counts(flat_hw: int) -> tuple[int, int]:
    params = (conv(3, 1, 32, True) + bn(32) + conv(3, 32, 64, True) + bn(64)
              + dense(flat_hw * flat_hw * 64, 128) + dense(128, 10))
    return params, bn(32) + bn(64)


def cifar_cnn_counts() -> tuple[int, int]:
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 196), (196, 196)]
    params = sum(conv(3, ci, co, True) + bn(co) for ci, co in convs)
    params += dense(4 * 4 * 196, 256) + bn(256) + dense(256, 10)
    stats = sum(bn(co) for _, co in convs) + bn(256)
    return params, stats


def wrn_counts(depth: int, k: int) -> tuple[int, int]:
    units = (depth - 4) // 6
    params, stats, cin = conv(3, 3, 16, False), 0, 16
    for stage_width, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        for u in range(units):
            s = stride if u == 0 else 1
            params += bn(cin) + conv(3, cin, stage_width, False)
            params += bn(stage_width) + conv(3, stage_width, stage_width, False)
            if cin != stage_width or s != 1:
                params += conv(1, cin, stage_width, False)  # projection shortcut
            stats += bn(cin) + bn(stage_width)
            cin = stage_width
    params += bn(cin) + dense(cin, 10)
    return params, stats + bn(cin)


def resnet_counts(stage_sizes: tuple[int, ...], width: int = 64,
                  num_classes: int = 10) -> tuple[int, int]:
    params, stats, cin = conv(3, 3, width, False) + bn(width), bn(width), width
    for stage, blocks in enumerate(stage_sizes):
        p = width * 2**stage
        for b in range(blocks):
            s = 2 if stage > 0 and b == 0 else 1
            params += conv(1, cin, p, False) + bn(p) + conv(3, p, p, False) + bn(p)
            params += conv(1, p, 4 * p, False) + bn(4 * p)
            stats += bn(p) + bn(p) + bn(4 * p)
            if cin != 4 * p or s != 1:
                params += conv(1, cin, 4 * p, False) + bn(4 * p)
                stats += bn(4 * p)
            cin = 4 * p
    return params + dense(cin, num_classes), stats


EXPECTED = {
    "mnist_cnn": (mnist_cnn_counts(7), MNIST_SHAPE),        # SAME: 28->14->7
    "mnist_cnn_valid": (mnist_cnn_counts(5), MNIST_SHAPE),  # VALID: 28->26->13->11->5
    "cifar_cnn": (cifar_cnn_counts(), CIFAR_SHAPE),
    "wrn34_10": (wrn_counts(34, 10), CIFAR_SHAPE),
    "wrn16_1": (wrn_counts(16, 1), CIFAR_SHAPE),
    "resnet50": (resnet_counts((3, 4, 6, 3)), CIFAR_SHAPE),
}
SMALL = ("mnist_cnn", "mnist_cnn_valid", "cifar_cnn", "wrn16_1")


def n_elems(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def abstract_init(name: str, dtype=jnp.float32, batch: int = 2):
    """Shapes of variables and of inference logits, without allocating or computing."""
    model = get_model(name, dtype=dtype)
    x = jax.ShapeDtypeStruct((batch, *EXPECTED[name][1]), jnp.float32)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return variables, logits


def test_registry_covers_expected_models():
    assert set(MODEL_NAMES) == set(EXPECTED)


def test_hand_counts_match_published_totals():
    # Independent anchors: the widely quoted PyTorch totals for these exact architectures.
    assert wrn_counts(34, 10)[0] == 46_160_474
    assert resnet_counts((3, 4, 6, 3))[0] == 23_520_842


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_and_batch_stats_counts(name):
    variables, logits = abstract_init(name)
    (params, stats), _ = EXPECTED[name]
    assert set(variables) == {"params", "batch_stats"}
    assert n_elems(variables["params"]) == params
    assert n_elems(variables["batch_stats"]) == stats
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bf16_compute_keeps_float32_params_and_logits(name):
    variables, logits = abstract_init(name, dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert logits.dtype == jnp.float32


def random_variables(model, x, seed: int = 0):
    """Variables of the right shapes filled from numpy (no RNG compile cost, unlike init)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    rng = np.random.default_rng(seed)
    fill = lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype)  # noqa: E731
    return {"params": jax.tree.map(fill, shapes["params"]),
            "batch_stats": jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                                        shapes["batch_stats"])}


def run_both_modes(model, variables, x):
    """(inference logits, train logits, batch_stats updates) in one compiled call."""
    def both(v, x):
        eval_logits = model.apply(v, x, train=False)
        train_logits, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
        return eval_logits, train_logits, updates
    return jax.jit(both)(variables, x)


@pytest.mark.parametrize("name,dtype", [(n, jnp.float32) for n in SMALL]
                         + [("wrn16_1", jnp.bfloat16)])
def test_forward_and_batch_stats_update(name, dtype):
    model = get_model(name, dtype=dtype)
    x = jax.random.uniform(jax.random.key(1), (3, *EXPECTED[name][1]))
    variables = random_variables(model, x)
    logits, logits_t, updates = run_both_modes(model, variables, x)
    for out in (logits, logits_t):
        assert out.shape == (3, 10) and out.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(out)))
    assert set(updates) == {"batch_stats"}
    old, new = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates["batch_stats"])
    assert len(old) == len(new)
    assert all(not np.allclose(o, n) for o, n in zip(old, new))  # every BN layer moved
    assert {leaf.dtype for leaf in new} == {jnp.dtype(jnp.float32)}


def test_first_batchnorm_running_stats_use_momentum_0_9():
    """Running mean/var after one train step = 0.9 * init + 0.1 * batch statistic, where the
    batch statistic is of conv1's output computed here by brute force in numpy (SAME pad)."""
    model = get_model("mnist_cnn")
    x = np.asarray(jax.random.uniform(jax.random.key(3), (2, 28, 28, 1)), dtype=np.float64)
    variables = jax.jit(lambda k, x: model.init(k, x, train=False))(
        jax.random.key(0, impl="unsafe_rbg"), jnp.asarray(x, jnp.float32))
    _, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, jnp.asarray(x, jnp.float32))
    k = np.asarray(variables["params"]["Conv_0"]["kernel"], np.float64)  # [3,3,1,32]
    b = np.asarray(variables["params"]["Conv_0"]["bias"], np.float64)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((2, 28, 28, 32)) + b
    for i in range(3):
        for j in range(3):
            out += xp[:, i:i + 28, j:j + 28, :] @ k[i, j]
    mean, var = out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))
    stats = updates["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.9 * 0.0 + 0.1 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 * 1.0 + 0.1 * var, rtol=1e-4, atol=1e-6)


def test_small_resnet_forward_runs():
    # ResNet-50 itself is only shape-checked; this runs the bottleneck code on a narrow copy.
    model = ResNet(stage_sizes=(2, 1, 1, 1), width=4, num_classes=4)
    x = jax.random.uniform(jax.random.key(2), (2, 8, 8, 3))
    variables = random_variables(model, x)
    assert n_elems(variables["params"]) == resnet_counts((2, 1, 1, 1), 4, 4)[0]
    assert n_elems(variables["batch_stats"]) == resnet_counts((2, 1, 1, 1), 4, 4)[1]
    logits, updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    assert logits.shape == (2, 4) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert set(updates) == {"batch_stats"}


def test_num_classes_is_respected():
    model = get_model("mnist_cnn", num_classes=7)
    x = jnp.zeros((2, 28, 28, 1))
    logits = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, train=False),
                                                x, train=False))
    assert logits.shape == (2, 7)


def test_unknown_model_name_lists_accepted_names():
    with pytest.raises(ValueError, match="mnist_cnn.*resnet50"):
        get_model("vgg16")


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"dtype": jnp.int32}])
def test_bad_get_model_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        get_model("mnist_cnn", **kwargs)


def test_wrong_input_shape_is_rejected():
    model = get_model("mnist_cnn")
    with pytest.raises(ValueError, match="4-D NHWC"):
        model.init(jax.random.key(0), jnp.zeros((28, 28, 1)), train=False)
    with pytest.raises(ValueError, match=r"\(28, 28, 1\)"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


def test_invalid_wrn_depth():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="depth"):
        WideResNet(depth=20, widen_factor=1).init(jax.random.key(0), x, train=False)
