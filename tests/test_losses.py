"""Per-example losses against hand-derived values and NumPy."""
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax import losses


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 5)) * 3
    y = rng.integers(0, 5, 6)
    expect = np.log(np.exp(z).sum(1)) - z[np.arange(6), y]
    got = losses.cross_entropy(jnp.asarray(z, jnp.float32), jnp.asarray(y))
    assert got.shape == (6,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_cw_margin_excludes_true_class_exactly_with_negative_logits():
    # All logits negative: multiplying the true class by zero would make 0 the "other" max.
    z = jnp.array([[-5.0, -1.0, -3.0], [2.0, 7.0, 1.0]])
    y = jnp.array([1, 0])
    got = losses.cw_margin(z, y, kappa=0.5)
    # Row 0: z_y = -1, max other = -3 -> -relu(-1 + 3 + 0.5) = -2.5.
    # Row 1: z_y = 2, max other = 7 -> -relu(2 - 7 + 0.5) = 0.
    np.testing.assert_allclose(got, [-2.5, 0.0])
    np.testing.assert_allclose(losses.cw_margin(z, y), [-52.0, -45.0])  # kappa = 50


def test_losses_validate_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        losses.cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        losses.cw_margin(jnp.zeros((2, 3)), jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.get_loss("hinge")
