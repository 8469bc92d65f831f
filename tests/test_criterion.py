"""FOSC against brute force over the ball's vertices, hand-derived cases and finite differences."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fosc_jax


def brute_force_fosc(g, xk, lower, upper):
    """max over every vertex v of the box [lower, upper] of <v - xk, g>, per example."""
    out = []
    for gi, xi, lo, up in zip(g, xk, lower, upper):
        best = -np.inf
        for choice in itertools.product((0, 1), repeat=gi.size):
            v = np.where(np.array(choice, bool), up, lo)
            best = max(best, float(np.dot(v - xi, gi)))
        out.append(best)
    return np.array(out)


@pytest.mark.parametrize("d", [1, 5, 12])
def test_fosc_equals_vertex_maximum(d):
    rng = np.random.default_rng(d)
    b = 4
    eps = rng.uniform(0.05, 0.5, size=b)
    x0 = rng.uniform(0, 1, (b, d))
    xk = x0 + rng.uniform(-1, 1, (b, d)) * eps[:, None]
    g = rng.normal(size=(b, d))
    expect = brute_force_fosc(g, xk, x0 - eps[:, None], x0 + eps[:, None])
    got = fosc_jax.fosc(jnp.asarray(g, jnp.float32), jnp.asarray(xk - x0, jnp.float32),
                        jnp.asarray(eps, jnp.float32))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [3, 10])
def test_fosc_box_equals_vertex_maximum_of_clipped_ball(d):
    rng = np.random.default_rng(100 + d)
    b, eps = 5, 0.3
    x0 = rng.uniform(0, 1, (b, d))
    x0[:, 0] = 0.05  # force the box to cut the ball
    lower, upper = np.maximum(x0 - eps, 0), np.minimum(x0 + eps, 1)
    xk = rng.uniform(lower, upper)
    g = rng.normal(size=(b, d))
    expect = brute_force_fosc(g, xk, lower, upper)
    got = fosc_jax.fosc_box(jnp.asarray(g, jnp.float32), jnp.asarray(xk, jnp.float32),
                            jnp.asarray(x0, jnp.float32), eps)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(got) <= np.asarray(
        fosc_jax.fosc(jnp.asarray(g), jnp.asarray(xk - x0), eps)) + 1e-5)


def test_fosc_is_nonnegative_in_ball_and_zero_at_linear_corner():
    rng = np.random.default_rng(0)
    b, shape, eps = 8, (4, 4, 3), 0.1
    w = rng.normal(size=(b,) + shape)           # gradient of a linear loss <w, x>
    inside = rng.uniform(-eps, eps, (b,) + shape)
    assert np.all(np.asarray(fosc_jax.fosc(jnp.asarray(w), jnp.asarray(inside), eps)) >= -1e-6)
    corner = eps * np.sign(w)
    np.testing.assert_allclose(fosc_jax.fosc(jnp.asarray(w), jnp.asarray(corner), eps), 0,
                               atol=1e-5)
    # Hand case: g = (1, -2), delta = (0.1, 0), eps = 0.1 -> 0.1 * 3 - 0.1 = 0.2.
    np.testing.assert_allclose(
        fosc_jax.fosc(jnp.array([[1.0, -2.0]]), jnp.array([[0.1, 0.0]]), 0.1), [0.2],
        rtol=1e-6)


def test_fosc_matches_finite_difference_gradient_on_mlp():
    rng = np.random.default_rng(1)
    d, h, c, b, eps = 6, 8, 3, 5, 0.2
    w1, w2 = rng.normal(size=(d, h)), rng.normal(size=(h, c))
    y = rng.integers(0, c, b)
    x0 = rng.uniform(0, 1, (b, d))
    xk = np.clip(x0 + rng.uniform(-eps, eps, (b, d)), 0, 1)

    def np_loss(x, yi):  # float64 reference: one example's cross-entropy
        z = np.tanh(x @ w1) @ w2
        return np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[yi]

    fd = np.zeros_like(xk)
    for i in range(b):
        for j in range(d):
            e = np.zeros(d)
            e[j] = 1e-5
            fd[i, j] = (np_loss(xk[i] + e, y[i]) - np_loss(xk[i] - e, y[i])) / 2e-5
    expect = eps * np.abs(fd).sum(1) - ((xk - x0) * fd).sum(1)

    def total(x):
        z = jnp.tanh(x @ jnp.asarray(w1, jnp.float32)) @ jnp.asarray(w2, jnp.float32)
        return fosc_jax.losses.cross_entropy(z, jnp.asarray(y)).sum()

    g = jax.grad(total)(jnp.asarray(xk, jnp.float32))
    got = fosc_jax.fosc(g, jnp.asarray(xk - x0, jnp.float32), eps)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


def test_fosc_low_precision_inputs_computed_in_float32():
    rng = np.random.default_rng(2)
    g = jnp.asarray(rng.normal(size=(3, 4096)), jnp.bfloat16)
    d = jnp.asarray(rng.uniform(-0.03, 0.03, (3, 4096)), jnp.bfloat16)
    got = fosc_jax.fosc(g, d, 0.03)
    assert got.dtype == jnp.float32
    g64, d64 = np.asarray(g, np.float64), np.asarray(d, np.float64)
    expect = 0.03 * np.abs(g64).sum(1) - (g64 * d64).sum(1)
    np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_fosc_works_under_jit_and_vmap():
    rng = np.random.default_rng(3)
    g = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
    d = jnp.asarray(rng.uniform(-0.1, 0.1, (2, 5, 7)), jnp.float32)
    direct = np.stack([fosc_jax.fosc(g[i], d[i], 0.1) for i in range(2)])
    np.testing.assert_allclose(jax.vmap(lambda a, b: fosc_jax.fosc(a, b, 0.1))(g, d), direct,
                               rtol=1e-6)
    np.testing.assert_allclose(jax.jit(fosc_jax.fosc)(g[0], d[0], 0.1), direct[0], rtol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda: fosc_jax.fosc(jnp.ones((2, 3)), jnp.ones((2, 4)), 0.1), r"delta has shape \(2, 4\), expected \(2, 3\)"),
    (lambda: fosc_jax.fosc(jnp.ones((2, 3)), jnp.ones((2, 3)), -0.1), "eps must be >= 0"),
    (lambda: fosc_jax.fosc(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones(3)), r"eps must be a scalar or have shape \(2,\)"),
    (lambda: fosc_jax.fosc_box(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((1, 3)), 0.1), r"x0 has shape \(1, 3\)"),
])
def test_fosc_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
