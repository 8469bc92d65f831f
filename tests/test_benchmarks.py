"""Benchmarks: FLOP counting, the PyTorch reference, and the bench_step smoke run.

No timing is asserted anywhere: speed is only measured by the benchmarks themselves.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import flops  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
ROW_KEYS = {"model", "batch", "mode", "c_t", "dtype", "ours_img_s", "ours_step_ms",
            "ours_compile_s", "ours_steps_mean", "ours_tflop_s", "ours_peak_frac",
            "flops_per_step", "torch_fp32_img_s", "torch_bf16_cl_img_s", "torch_img_s",
            "torch_variant", "ratio", "device", "torch_device"}


class _Tiny(nn.Module):
    """conv 3x3 SAME (2 -> 4), conv 3x3 stride 2 VALID (4 -> 6), dense 10."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))
        x = nn.Conv(6, (3, 3), strides=(2, 2), padding="VALID")(x)
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def _tiny_counts(batch: int, side: int = 8) -> tuple[int, int]:
    """Conv and dense FLOPs of _Tiny by hand: 2 * (output elements) * (kernel window * C_in)."""
    conv1 = 2 * batch * side * side * 4 * (3 * 3 * 2)
    out = (side - 3) // 2 + 1
    conv2 = 2 * batch * out * out * 6 * (3 * 3 * 4)
    dense = 2 * batch * (out * out * 6) * 10
    return conv1 + conv2, dense


def test_tiny_model_flops_match_hand_count():
    model = _Tiny()
    x = jnp.zeros((3, 8, 8, 2))
    params = model.init(jax.random.key(0), x)
    counted = flops.count_fn_flops(model.apply, params, x)
    conv, dense = _tiny_counts(3)
    assert counted.conv == conv
    assert counted.dense == dense
    assert counted.matmul == conv + dense


@pytest.mark.parametrize("strides,groups", [((1, 1), 1), ((2, 2), 1), ((1, 1), 2)])
def test_valid_conv_flops_match_xla_cost_analysis(strides, groups):
    """XLA's cost model counts 2 * MACs of a VALID conv exactly (it skips padding, so SAME
    convs are checked by hand above instead)."""
    x = jnp.ones((2, 9, 9, 4))
    w = jnp.ones((3, 3, 4 // groups, 6))
    conv = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups)
    ours = flops.count_fn_flops(conv, x, w).conv
    cost = jax.jit(conv).lower(x, w).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if not cost or "flops" not in cost:
        pytest.skip("this backend's cost_analysis reports no flops")
    assert ours == pytest.approx(cost["flops"], rel=1e-6)


def test_mnist_cnn_forward_flops_by_hand():
    f = flops.model_forward_flops("mnist_cnn", (28, 28, 1), batch=2)
    # SAME padding: 28x28x32 <- 3x3x1, 14x14x64 <- 3x3x32, dense 3136->128, 128->10.
    conv = 2 * (28 * 28 * 32 * 9 * 1 + 14 * 14 * 64 * 9 * 32)
    dense = 2 * (7 * 7 * 64 * 128 + 128 * 10)
    assert f.conv == 2 * conv and f.dense == 2 * dense


def test_train_step_flops_formula():
    assert flops.attack_grad_evals("standard", 10) == 10
    assert flops.attack_grad_evals("dynamic", 10, iterations=3) == 4
    assert flops.train_step_flops(100, 10) == 100 * (flops.ATTACK_GRAD_FACTOR * 10
                                                     + flops.UPDATE_FACTOR)
    with pytest.raises(ValueError):
        flops.attack_grad_evals("dynamic", 10)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("name,shape", [
    ("mnist_cnn", (28, 28, 1)), ("mnist_cnn_valid", (28, 28, 1)), ("cifar_cnn", (32, 32, 3)),
    ("wrn16_1", (32, 32, 3)), ("wrn34_10", (32, 32, 3))])
def test_torch_models_match_jax_parameter_counts(name, shape):
    from benchmarks import torch_reference
    from fosc_jax.models import get_model

    model = get_model(name)
    variables = jax.eval_shape(lambda k: model.init(k, jnp.zeros((2, *shape)), train=False),
                               jax.random.key(0))
    n_jax = sum(math.prod(v.shape) for v in jax.tree_util.tree_leaves(variables["params"]))
    n_bn = sum(math.prod(v.shape) for v in jax.tree_util.tree_leaves(variables["batch_stats"]))
    tmodel = torch_reference.build_model(name)
    assert sum(p.numel() for p in tmodel.parameters()) == n_jax
    assert sum(b.numel() for n, b in tmodel.named_buffers() if "running" in n) == n_bn


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_attack_semantics():
    import torch

    from benchmarks import torch_reference

    ref = torch_reference.TorchAdvStep("mnist_cnn", eps=0.3, step_size=0.075, num_steps=3)
    rng = np.random.default_rng(0)
    x, y = ref.prepare(rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8),
                       rng.integers(0, 10, (4,), dtype=np.int32))
    x_adv, steps, iters = ref.attack(x, y, None)
    assert iters == 3 and torch.all(steps == 3)
    assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    # Threshold +inf: every example stops after the mandatory first step.
    x_adv, steps, iters = ref.attack(x, y, float("inf"))
    assert iters == 2 and torch.all(steps == 1)
    # Threshold -inf: nobody stops; K steps and K + 1 gradients.
    _, steps, iters = ref.attack(x, y, float("-inf"))
    assert iters == 4 and torch.all(steps == 3)
    result = ref.step(x, y, 0.5)
    assert math.isfinite(float(result.loss))


def _run_bench(tmp_path, *extra, env=None):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_step.py"),
                           "--quick", "--json", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_bench_step_quick_json(tmp_path):
    # mnist_cnn only: cifar_cnn's compile would add half a minute to CI; its PyTorch twin is
    # checked by test_torch_models_match_jax_parameter_counts.
    result, stdout = _run_bench(tmp_path, "--models", "mnist_cnn")
    rows = result["rows"]
    assert {(r["model"], r["mode"], r["c_t"]) for r in rows} == {
        (m, mode, c) for m in ("mnist_cnn",)
        for mode, c in (("standard", None), ("dynamic", 0.5), ("dynamic", "inf"))}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["batch"] == 8 and r["ours_img_s"] > 0 and r["flops_per_step"] > 0
        assert 1 <= r["ours_steps_mean"] <= 2
        if r["c_t"] == "inf":   # every example stops after the mandatory first step
            assert r["ours_steps_mean"] == 1 and r["ours_iterations"] == 1
        if HAS_TORCH:
            assert r["torch_fp32_img_s"] > 0 and r["torch_bf16_cl_img_s"] > 0
            assert r["torch_img_s"] == max(r["torch_fp32_img_s"], r["torch_bf16_cl_img_s"])
            assert r["ratio"] == pytest.approx(r["ours_img_s"] / r["torch_img_s"])
    assert result["meta"]["peak_flops"]["float32"] > 0
    assert "| model | batch | mode |" in stdout


def test_bench_step_without_torch(tmp_path):
    """A torch that fails to import (as when it is absent): empty torch columns and a note."""
    shim = tmp_path / "shim" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('torch hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(shim.parent), ROOT, os.environ.get("PYTHONPATH", "")]))
    result, stdout = _run_bench(tmp_path, "--models", "mnist_cnn", "--thresholds", "", env=env)
    assert [r["mode"] for r in result["rows"]] == ["standard"]
    row = result["rows"][0]
    assert row["ours_img_s"] > 0
    assert row["torch_img_s"] is None and row["ratio"] is None
    assert "torch is not installed" in stdout


MNIST_DIR = (os.environ.get("FOSC_JAX_MNIST_DIR")
             or os.path.join(ROOT, "..", "shared", "data", "mnist"))


@pytest.mark.skipif(not os.path.isdir(MNIST_DIR), reason="MNIST files not found")
def test_bench_epoch_smoke(tmp_path):
    out = tmp_path / "epoch.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_epoch.py"),
                           "--data", MNIST_DIR, "--limit", "96", "--batch", "32", "--steps", "2",
                           "--thresholds", "0.5", "--exits", "host:1+compact,none", "--json",
                           str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["c_t"], r["exit"]) for r in rows] == [
        ("standard", None, "-"), ("dynamic", 0.5, "host:1+compact"), ("dynamic", 0.5, "none")]
    for r in rows:
        assert r["images"] == 96 and r["seconds"] > 0 and r["img_s"] > 0
        assert 1 <= r["attack_steps_mean"] <= r["attack_iterations_mean"] <= 2
    # The exit variants change the cost, never the numbers: same steps, same loss.
    host, unrolled = rows[1], rows[2]
    assert host["attack_steps_mean"] == unrolled["attack_steps_mean"]
    assert host["train_loss"] == pytest.approx(unrolled["train_loss"], rel=1e-5)


def test_speed_levers_leave_the_training_step_unchanged():
    """The pre-lever step (nn.max_pool, one attack step per while_loop iteration) and the
    default one (reshape+max pool, unrolled steps) train to the same loss and parameters."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_levers
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, 8), jnp.int32)
    out = {}
    for variant in ("before", "pool+unroll"):
        call, sync, _ = bench_levers.make_variant("mnist_cnn", 8, variant, x, y, num_steps=3)
        m = call()
        sync(m)
        out[variant] = jax.device_get(m)
    for key in ("train_loss", "fosc", "num_steps", "adv_loss"):
        np.testing.assert_allclose(out["before"][key], out["pool+unroll"][key], rtol=2e-5,
                                   atol=1e-6)
