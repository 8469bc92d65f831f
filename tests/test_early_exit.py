"""Dynamic AT's early exit: the host-checked blocks (XLA:CPU), the in-graph while_loop
(accelerators) and the fully unrolled step (no exit) must train identically, and the exit
must really skip work once every example has stopped."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax import attacks, training
from fosc_jax.defenses import settings_for_epoch
from fosc_jax.training import executors

import tiny_config


def _config(defense, compact_to):
    cfg = tiny_config.get_config(defense)
    cfg.attack.num_steps = 7
    if compact_to is not None:
        cfg.attack.bn_mode = "eval"
        cfg.defense.fosc_origin = "start"
    return cfg


def _trainer(executor, *, block=3, defense="dynamic", compact_to=None):
    """A trainer running ``executor`` ("compiled" or "host") with ``block`` steps between
    exit checks. ``compact_to`` N: BatchNorm in inference mode while attacking (what
    compaction needs), FOSC measured from the random start (so the compacted blocks must
    carry it over), and the host exit compacting down to N examples (0: BN and origin so,
    no compaction)."""
    trainer = training.Trainer(_config(defense, compact_to), (28, 28, 1), 10)
    if executor == "compiled":
        trainer.executor = executors.Compiled(trainer, block)
    else:
        trainer.executor = executors.HostChecked(trainer, block, compact_min=compact_to or None)
    return trainer


def _step(trainer, threshold, *, early_exit=True):
    """One training step on 16 random images from the same initial state."""
    state = trainer.init_state(jax.random.PRNGKey(3))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, 16), jnp.int32)
    s = settings_for_epoch(trainer.config, 0, 16).replace(threshold=jnp.float32(threshold),
                                                          early_exit=early_exit)
    state, m = trainer.step(state, x, y, s)
    return jax.device_get((state.params, m))


def _assert_same_training(got, want):
    (params, m), (ref_params, ref) = got, want
    np.testing.assert_array_equal(m["num_steps"], ref["num_steps"])
    np.testing.assert_allclose(m["fosc"], ref["fosc"], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_host_device_and_unrolled_steps_agree():
    device = _trainer("compiled")
    _, probe = _step(device, -np.inf, early_exit=False)
    threshold = float(np.median(probe["fosc"]))  # stops some examples early, not others
    want = _step(device, threshold, early_exit=False)       # all 7 steps unrolled, no exit
    steps = np.asarray(want[1]["num_steps"])
    assert steps.min() < steps.max(), "threshold should stop some examples before others"
    _assert_same_training(_step(device, threshold), want)   # in-graph while_loop
    _assert_same_training(_step(_trainer("host"), threshold), want)


def test_host_exit_runs_only_the_blocks_it_needs(monkeypatch):
    calls = []
    real = executors.HostChecked._block

    def counting(self, *args):
        calls.append(1)
        return real(self, *args)
    monkeypatch.setattr(executors.HostChecked, "_block", counting)
    # c_t = +inf: every example stops after the first step, so no block is traced or run.
    _, m = _step(_trainer("host"), np.inf)
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


# dynamic_trades: the host path also carries the clean prediction of its KL attack loss.
@pytest.mark.parametrize("defense", ["dynamic", "dynamic_trades"])
def test_compacted_exit_trains_like_the_unrolled_step(defense, monkeypatch):
    """The host exit that shrinks the batch to its active examples (16 -> 8 -> 4 -> 2 here)
    gives every example the steps, FOSC and update of the plain unrolled step."""
    unrolled = _trainer("compiled", defense=defense, compact_to=0)
    _, probe = _step(unrolled, -np.inf, early_exit=False)
    # Thresholds that stop most examples early (so the batch shrinks) and keep a few going:
    # FOSC of the KL loss is far smaller after the first step than at the end.
    threshold = (float(np.quantile(probe["fosc"], 0.7)) if defense == "dynamic"
                 else 0.6 * float(np.min(probe["fosc"])))
    want = _step(unrolled, threshold, early_exit=False)
    steps = np.asarray(want[1]["num_steps"])
    assert steps.min() < steps.max(), "threshold should stop some examples before others"
    sizes = []
    real = executors.HostChecked._gather

    def recording(self, *args):
        sizes.append(args[-1])
        return real(self, *args)
    monkeypatch.setattr(executors.HostChecked, "_gather", recording)
    got = _step(_trainer("host", block=1, defense=defense, compact_to=2), threshold)
    assert sizes and min(sizes) < 16, f"the batch never shrank (sizes {sizes})"
    _assert_same_training(got, want)
