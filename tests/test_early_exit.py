"""Dynamic AT's early exit: the host-checked blocks (XLA:CPU), the in-graph while_loop
(accelerators) and the fully unrolled step (no exit) must train identically, and the exit
must really skip work once every example has stopped."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax import attacks, training
from fosc_jax.defenses import settings_for_epoch

import tiny_config


def _step(exit_check, threshold, *, early_exit=True, exit_block=3, defense="dynamic"):
    cfg = tiny_config.get_config(defense)
    cfg.attack.num_steps = 7
    trainer = training.Trainer(cfg, (28, 28, 1), 10, exit_check=exit_check,
                               exit_block=exit_block)
    state = trainer.init_state(jax.random.PRNGKey(3))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, 16), jnp.int32)
    s = settings_for_epoch(cfg, 0, 16).replace(threshold=jnp.float32(threshold),
                                               early_exit=early_exit)
    state, m = trainer.step(state, x, y, s)
    return jax.device_get((state.params, m))


def _median_fosc_after_two_steps(defense):
    """A threshold that stops some examples early and lets others run on."""
    _, m = _step("device", -np.inf, early_exit=False, defense=defense)
    return float(np.median(m["fosc"]))


# dynamic_trades: the host path carries the clean prediction its KL attack loss needs.
@pytest.mark.parametrize("defense", ["dynamic", "dynamic_trades"])
def test_host_device_and_unrolled_steps_agree(defense):
    threshold = _median_fosc_after_two_steps(defense)
    ref_params, ref = _step("device", threshold, early_exit=False, defense=defense)  # no exit
    steps = np.asarray(ref["num_steps"])
    assert steps.min() < steps.max(), "threshold should stop some examples before others"
    # (dynamic_trades: the host path, which hands the clean prediction between programs)
    for check in ("host", "device") if defense == "dynamic" else ("host",):
        params, m = _step(check, threshold, defense=defense)
        np.testing.assert_array_equal(m["num_steps"], steps)
        np.testing.assert_allclose(m["fosc"], ref["fosc"], rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_host_exit_runs_only_the_blocks_it_needs(monkeypatch):
    calls = []
    real = training.Trainer._host_block

    def counting(self, *args):
        calls.append(1)
        return real(self, *args)
    monkeypatch.setattr(training.Trainer, "_host_block", counting)
    # c_t = +inf: every example stops after the first step, so no block is traced or run.
    _, m = _step("host", np.inf)
    assert np.all(m["num_steps"] == 1) and not calls


@pytest.mark.parametrize("unroll", [None, 1, 2, 4])
def test_masked_pgd_results_do_not_depend_on_unroll(unroll):
    w = jax.random.normal(jax.random.key(0), (12, 5))
    logits_fn = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w) * 3  # noqa: E731
    x0 = jax.random.uniform(jax.random.key(1), (9, 3, 4))
    y = jnp.arange(9) % 5
    kw = dict(eps=0.3, step_size=0.07, max_steps=7, budget=jnp.array([0, 1, 2, 3, 4, 5, 6, 7, 7]),
              threshold=0.05)
    ref = attacks.masked_pgd(logits_fn, x0, y, jax.random.key(2), unroll=1, **kw)
    out = attacks.masked_pgd(logits_fn, x0, y, jax.random.key(2), unroll=unroll, **kw)
    np.testing.assert_array_equal(out.num_steps, ref.num_steps)
    np.testing.assert_allclose(out.x_adv, ref.x_adv, atol=1e-6)
    assert int(out.iterations) == int(ref.iterations) == int(np.max(ref.num_steps))
