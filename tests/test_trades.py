"""TRADES and Dynamic TRADES: losses against the formula (float64 NumPy, finite differences),
the KL attack's gradient and FOSC against a hand-derived linear model, their settings, and a
run that trains, checkpoints, resumes bitwise and evaluates like the other defenses."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax import rundir, losses, parallel
from fosc_jax.attacks import masked_pgd
from fosc_jax.config import ConfigError, base_config, validate_config
from fosc_jax.defenses import DynamicTrades, Trades, get_defense
from fosc_jax.evaluation import evaluate_classifier
from fosc_jax.training import train_and_evaluate

import tiny_config



def softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl64(p_logits, q_logits):
    p, q = softmax64(p_logits), softmax64(q_logits)
    return np.sum(p * (np.log(p) - np.log(q)), -1)


def test_kl_divergence_matches_the_definition_and_is_zero_on_itself():
    rng = np.random.default_rng(0)
    p, q = rng.normal(0, 3, (5, 7)), rng.normal(0, 3, (5, 7))
    got = losses.kl_divergence(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32))
    np.testing.assert_allclose(got, kl64(p, q), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got) >= 0)
    np.testing.assert_allclose(losses.kl_divergence(jnp.asarray(p), jnp.asarray(p)), 0, atol=1e-6)
    # Large logits do not overflow (log-softmax, not log of softmax).
    big = losses.kl_divergence(jnp.array([[1000.0, 0.0]]), jnp.array([[0.0, 1000.0]]))
    assert np.isfinite(big).all() and float(big[0]) == pytest.approx(1000.0, rel=1e-4)


def test_kl_to_clean_holds_the_clean_prediction_constant():
    rng = np.random.default_rng(1)
    clean, adv = jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=(3, 4)))
    y = jnp.zeros(3, jnp.int32)
    np.testing.assert_allclose(losses.kl_to_clean(clean)(adv, y), kl64(clean, adv), rtol=1e-5)
    # The gradient reaches the adversarial logits only.
    g_clean = jax.grad(lambda c: jnp.sum(losses.kl_to_clean(c)(adv, y)))(clean)
    np.testing.assert_array_equal(g_clean, 0.0)


def linear_model(w, b):
    return lambda x: jnp.reshape(x, (x.shape[0], -1)) @ w + b


def test_kl_attack_gradient_and_fosc_match_the_hand_derived_linear_case():
    # logits = x W + b; d/dx KL(p || softmax(xW + b)) = W (q - p), p the clean prediction.
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (12, 5)).astype(np.float32)
    b = rng.normal(0, 1, 5).astype(np.float32)
    f = linear_model(jnp.asarray(w), jnp.asarray(b))
    x0 = rng.uniform(0.2, 0.8, (4, 2, 2, 3)).astype(np.float32)
    y = jnp.zeros(4, jnp.int32)
    eps = 0.1
    res = masked_pgd(f, jnp.asarray(x0), y, jax.random.PRNGKey(0), eps=eps, step_size=0.03,
                     max_steps=3, loss=losses.kl_to_clean(f(jnp.asarray(x0))),
                     start_std=0.001)
    chex.assert_shape([res.fosc, res.loss, res.num_steps], (4,))
    chex.assert_type([res.fosc, res.loss, res.x_adv, res.num_steps],
                     [jnp.float32, jnp.float32, jnp.float32, jnp.int32])
    chex.assert_shape(res.x_adv, x0.shape)
    xa = np.asarray(res.x_adv, np.float64).reshape(4, -1)
    x0f = x0.reshape(4, -1).astype(np.float64)
    p = softmax64(x0f @ w + b)
    q = softmax64(xa @ w + b)
    g = (q - p) @ w.T.astype(np.float64)
    fosc = eps * np.abs(g).sum(1) - ((xa - x0f) * g).sum(1)
    np.testing.assert_allclose(res.fosc, fosc, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(res.loss, np.sum(p * (np.log(p) - np.log(q)), 1), rtol=1e-4,
                               atol=1e-7)
    assert np.all(np.abs(xa - x0f) <= eps + 1e-6) and np.all(np.asarray(res.loss) > 0)


def forward_of(w, b):
    """A train-mode forward with a fake BN statistic counting the passes."""
    def forward(x, stats):
        return linear_model(w, b)(x), {"passes": stats["passes"] + 1}
    return forward


def test_trades_training_loss_matches_the_formula_and_its_gradient():
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(0, 1, (6, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(0, 1, 3), jnp.float32)
    x = jnp.asarray(rng.uniform(0, 1, (5, 6)), jnp.float32)
    x_adv = jnp.clip(x + jnp.asarray(rng.uniform(-0.2, 0.2, (5, 6)), jnp.float32), 0, 1)
    y = jnp.asarray(rng.integers(0, 3, 5), jnp.int32)
    c = base_config()
    c.defense.name, c.defense.trades_beta = "trades", 6.0
    defense = get_defense(c)

    def mean_loss(w):
        per, logits, stats = defense.training_loss(forward_of(w, b), {"passes": 0}, x, x_adv,
                                                   y, None)
        return jnp.mean(per), (per, logits, stats)

    (_, (per, logits, stats)), grad = jax.value_and_grad(mean_loss, has_aux=True)(w)
    zc = np.asarray(x, np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    za = np.asarray(x_adv, np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    ce = -np.log(softmax64(zc)[np.arange(5), np.asarray(y)])
    np.testing.assert_allclose(per, ce + 6.0 * kl64(zc, za), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logits, za, rtol=1e-4, atol=1e-6)   # logits on x_adv, for the metrics
    assert stats["passes"] == 2                          # clean pass, then adversarial pass

    # The gradient flows through f(x) as well as f(x_adv): central differences in float64.
    def numpy_loss(w64):
        zc = np.asarray(x, np.float64) @ w64 + np.asarray(b, np.float64)
        za = np.asarray(x_adv, np.float64) @ w64 + np.asarray(b, np.float64)
        ce = -np.log(softmax64(zc)[np.arange(5), np.asarray(y)])
        return np.mean(ce + 6.0 * kl64(zc, za))
    w64, h, num = np.asarray(w, np.float64), 1e-6, np.zeros((6, 3))
    for i in range(6):
        for j in range(3):
            d = np.zeros_like(w64)
            d[i, j] = h
            num[i, j] = (numpy_loss(w64 + d) - numpy_loss(w64 - d)) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=2e-3, atol=2e-5)


def test_trades_settings_and_validation():
    c = base_config()
    c.defense.name = "trades"
    s = get_defense(c).attack_settings(3, 4, {})
    assert (s.start_std, s.early_exit, float(s.threshold)) == (0.001, False, -np.inf)
    np.testing.assert_allclose(s.step_size, 0.075)          # eps / 4 of eps 0.3
    c.defense.name = "dynamic_trades"
    d = get_defense(c)
    s = d.attack_settings(10, 4, {})
    assert isinstance(d, DynamicTrades) and isinstance(d, Trades)
    assert (s.start_std, s.early_exit) == (0.001, True)
    assert float(s.threshold) == pytest.approx(0.5 - 10 * 0.5 / 40)   # c_t, c_max 0.5, T' 40
    assert d.describe(10, {})["c_t"] == pytest.approx(0.375)
    c.defense.trades_beta = -1.0
    with pytest.raises(ConfigError, match=r"config.defense.trades_beta = -1.0 is invalid"):
        validate_config(c, check_data=False)
    c.defense.trades_beta = 6.0
    c.defense.t_prime = 60
    with pytest.raises(ConfigError, match=r"config.defense.t_prime = 60 is invalid"):
        validate_config(c, check_data=False)


def test_dynamic_trades_trains_resumes_bitwise_and_evaluates(tmp_path):
    from test_training import params_of, tiny_dataset
    ds, mesh = tiny_dataset(), parallel.make_mesh(1)
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    def config(stop=0):
        c = tiny_config.get_config("dynamic_trades", 2)
        c.eval.num_examples = 0   # evaluated below, once
        c.stop_after_epochs = stop
        return c
    train_and_evaluate(config(), full, dataset=ds, mesh=mesh)
    train_and_evaluate(config(stop=1), split, dataset=ds, mesh=mesh)
    train_and_evaluate(config(), split, dataset=ds, mesh=mesh)
    chex.assert_trees_all_equal(params_of(full), params_of(split))  # bitwise
    rows = rundir.read_metrics(split)
    assert [r["c_t"] for r in rows] == [0.5, 0.25]
    assert all(1 <= r["attack_steps_mean"] <= 3 for r in rows)
    record = evaluate_classifier(rundir.load_classifier(split), ds.x_test, ds.y_test,
                                 attacks=("fgsm", "pgd10"), progress=False, honesty=False)
    assert record["defense"] == "dynamic_trades" and "pgd10" in record["attacks"]
