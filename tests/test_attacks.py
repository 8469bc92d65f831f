"""Attacks against analytic optima, a NumPy re-implementation and counted loop iterations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import fosc_jax
from fosc_jax import attacks

EPS, ALPHA = 0.1, 0.025


def linear_model(w):
    w = jnp.asarray(w, jnp.float32)
    return lambda x: x.reshape(x.shape[0], -1) @ w


def mlp_params(d=12, h=16, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(d, h)) / np.sqrt(d), jnp.float32),
            jnp.asarray(rng.normal(size=(h, c)), jnp.float32))


def mlp(params):
    w1, w2 = params
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


def batch(b=16, d=12, c=4, seed=1):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.uniform(0, 1, (b, d)), jnp.float32),
            jnp.asarray(rng.integers(0, c, b), jnp.int32))


def test_pgd_reaches_analytic_optimum_of_linear_binary_model():
    # Two classes: CE grows with <w1 - w0, x> for label 0, so the optimum over ball ∩ box
    # is clip(x0 + eps * sign(w_other - w_true), 0, 1), reached within 8 steps of eps/4.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(10, 2))
    x0, _ = batch(b=32, d=10)
    y = jnp.asarray(rng.integers(0, 2, 32), jnp.int32)
    res = attacks.pgd(linear_model(w), x0, y, jax.random.key(0), eps=EPS, step_size=ALPHA,
                      num_steps=10)
    direction = np.where(np.asarray(y)[:, None] == 0, w[:, 1] - w[:, 0], w[:, 0] - w[:, 1])
    optimum = np.clip(np.asarray(x0) + EPS * np.sign(direction), 0, 1)
    np.testing.assert_allclose(res.x_adv, optimum, atol=1e-6)
    assert np.all(np.asarray(res.num_steps) == 10)


def numpy_pgd(w, x0, y, eps, alpha, steps):
    """Plain NumPy PGD on a softmax-linear model: grad_x CE = W (softmax(z) - onehot(y))."""
    x, xs = x0.copy(), []
    for _ in range(steps):
        z = x @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        g = p @ w.T
        x = np.clip(np.clip(x + alpha * np.sign(g), x0 - eps, x0 + eps), 0, 1)
        xs.append(x.copy())
    return xs


def test_pgd_without_random_start_matches_numpy_step_for_step():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(12, 5))
    x0, y = batch(b=8, d=12, c=5)
    expected = numpy_pgd(w.astype(np.float64), np.asarray(x0, np.float64), np.asarray(y),
                         EPS, ALPHA, 6)
    for k in range(1, 7):
        res = attacks.pgd(linear_model(w), x0, y, jax.random.key(0), eps=EPS,
                          step_size=ALPHA, num_steps=k, random_start=False)
        np.testing.assert_allclose(res.x_adv, expected[k - 1], atol=1e-6, err_msg=f"step {k}")


def test_iterates_stay_in_ball_and_box_and_fosc_is_of_final_iterate():
    params = mlp_params()
    x0, y = batch()
    res = attacks.pgd(mlp(params), x0, y, jax.random.key(3), eps=0.3, step_size=0.075,
                      num_steps=10)
    x = np.asarray(res.x_adv)
    assert np.all(x >= 0) and np.all(x <= 1)
    assert np.all(np.abs(x - np.asarray(x0)) <= 0.3 + 1e-6)
    g = jax.grad(lambda v: fosc_jax.losses.cross_entropy(mlp(params)(v), y).sum())(res.x_adv)
    np.testing.assert_allclose(res.fosc, fosc_jax.fosc(g, res.x_adv - x0, 0.3), rtol=1e-5,
                               atol=1e-6)
    assert np.all(np.asarray(res.fosc) >= -1e-5)


def counting_model(params, counter):
    """An MLP whose every forward evaluation bumps a host-side counter."""
    inner = mlp(params)

    def logits(x):
        jax.debug.callback(lambda: counter.append(1), ordered=False)
        return inner(x)
    return logits


@pytest.mark.parametrize("threshold, expect_steps", [(jnp.inf, 1), (-jnp.inf, 10)])
def test_dynamic_threshold_extremes(threshold, expect_steps):
    params = mlp_params()
    x0, y = batch()
    calls = []
    res = attacks.dynamic_pgd(counting_model(params, calls), x0, y, jax.random.key(1),
                              eps=0.3, step_size=0.075, num_steps=10, threshold=threshold)
    jax.block_until_ready(res)
    assert np.all(np.asarray(res.num_steps) == expect_steps)
    assert int(res.iterations) == expect_steps
    assert len(calls) == expect_steps + 1  # the start point, then one per step


def test_dynamic_stopped_examples_never_move_again_and_loop_count_is_max_steps():
    params = mlp_params()
    x0, y = batch(b=32)
    key = jax.random.key(7)
    full = attacks.pgd(mlp(params), x0, y, key, eps=0.3, step_size=0.075, num_steps=10,
                       record_trace=True)
    threshold = float(np.median(np.asarray(full.fosc_trace[3])))
    calls = []
    dyn = attacks.dynamic_pgd(counting_model(params, calls), x0, y, key, eps=0.3,
                              step_size=0.075, num_steps=10, threshold=threshold)
    jax.block_until_ready(dyn)
    steps = np.asarray(dyn.num_steps)
    assert steps.min() >= 1 and steps.min() < steps.max()
    assert len(calls) == steps.max() + 1 == int(dyn.iterations) + 1
    # Each example's x_adv equals plain PGD run for exactly its own number of steps, and
    # it stopped at the first step whose FOSC fell to the threshold.
    trace = np.asarray(full.fosc_trace)
    for s in np.unique(steps):
        ref = attacks.pgd(mlp(params), x0, y, key, eps=0.3, step_size=0.075, num_steps=int(s))
        idx = steps == s
        np.testing.assert_allclose(np.asarray(dyn.x_adv)[idx], np.asarray(ref.x_adv)[idx],
                                   atol=1e-6)
        np.testing.assert_allclose(np.asarray(dyn.fosc)[idx], trace[s, idx], rtol=1e-4,
                                   atol=1e-6)
        if s < 10:
            assert np.all(trace[s, idx] <= threshold + 1e-6)
        assert np.all(trace[1:s, idx] > threshold - 1e-6)


def test_curriculum_budgets_and_zero_budget_is_clean():
    params = mlp_params()
    x0, y = batch(b=12)
    budget = jnp.asarray(np.repeat([0, 1, 2, 3], 3), jnp.int32)
    res = attacks.masked_pgd(mlp(params), x0, y, jax.random.key(0), eps=0.3,
                             step_size=0.1, max_steps=3, budget=budget)
    np.testing.assert_array_equal(res.num_steps, budget)
    np.testing.assert_array_equal(np.asarray(res.x_adv)[:3], np.asarray(x0)[:3])
    assert not np.allclose(np.asarray(res.x_adv)[3:], np.asarray(x0)[3:])


def test_fosc_of_an_example_does_not_depend_on_its_batch():
    params = mlp_params(seed=4)
    x0, y = batch(b=128, seed=9)
    big = attacks.pgd(mlp(params), x0, y, jax.random.key(0), eps=0.3, step_size=0.075,
                      num_steps=5, random_start=False)
    for i in (0, 77):
        alone = attacks.pgd(mlp(params), x0[i:i + 1], y[i:i + 1], jax.random.key(0), eps=0.3,
                            step_size=0.075, num_steps=5, random_start=False)
        np.testing.assert_allclose(alone.fosc, big.fosc[i:i + 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.x_adv, big.x_adv[i:i + 1], atol=1e-6)


def test_fgsm_and_cw_inf():
    params = mlp_params()
    x0, y = batch()
    res = attacks.fgsm(mlp(params), x0, y, jax.random.key(0), eps=0.1)
    g = jax.grad(lambda v: fosc_jax.losses.cross_entropy(mlp(params)(v), y).sum())(x0)
    np.testing.assert_allclose(res.x_adv, np.clip(np.asarray(x0) + 0.1 * np.sign(g), 0, 1),
                               atol=1e-6)
    cw = attacks.cw_inf(mlp(params), x0, y, jax.random.key(0), eps=0.1, step_size=0.025)
    assert np.all(np.asarray(cw.num_steps) == 30)
    logits = np.asarray(mlp(params)(cw.x_adv))
    margin = np.asarray(fosc_jax.losses.cw_margin(jnp.asarray(logits), y))
    np.testing.assert_allclose(cw.loss, margin, rtol=1e-5, atol=1e-5)


def test_sharded_over_four_devices_matches_one_device():
    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (conftest sets it)")
    params = mlp_params()
    x0, y = batch(b=32)
    run = jax.jit(lambda x, t, k, th: attacks.dynamic_pgd(
        mlp(params), x, t, k, eps=0.3, step_size=0.075, num_steps=10, threshold=th))
    single = run(x0, y, jax.random.key(2), 0.05)
    mesh = Mesh(np.array(devices[:4]), ("data",))
    xs = jax.device_put(x0, NamedSharding(mesh, P("data")))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    sharded = run(xs, ys, jax.random.key(2), 0.05)
    assert len(sharded.x_adv.sharding.device_set) == 4
    np.testing.assert_allclose(sharded.x_adv, single.x_adv, atol=1e-6)
    np.testing.assert_allclose(sharded.fosc, single.fosc, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sharded.num_steps, single.num_steps)


def test_x_adv_carries_no_gradient():
    params = mlp_params()
    x0, y = batch()

    def outer(p):
        res = attacks.pgd(mlp(p), x0, y, jax.random.key(0), eps=0.1, step_size=0.05,
                          num_steps=2)
        return jnp.sum(res.x_adv)
    g = jax.grad(outer)(params)
    assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree_util.tree_leaves(g))


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(step_size=0.0), "step_size must be > 0"),
    (dict(num_steps=0), "num_steps must be an int >= 1"),
    (dict(y=jnp.array([0, 9])), r"y must lie in \[0, 4\)"),
    (dict(y=jnp.array([0, 1, 2])), r"y must have shape \(2,\)"),
    (dict(logits_fn=lambda x: jnp.zeros((3, 4))), r"logits_fn\(x0\) must have shape \(2, num_classes\)"),
])
def test_attack_bad_inputs_raise_before_compiling(kwargs, match):
    params = mlp_params()
    args = dict(logits_fn=mlp(params), x0=jnp.zeros((2, 12)), y=jnp.array([0, 1]),
                key=jax.random.key(0), eps=0.1, step_size=0.01, num_steps=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attacks.pgd(**args)
