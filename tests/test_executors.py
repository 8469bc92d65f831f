"""The execution paths: chosen once from ``config.executor``, and each one trains every row
it is given, whatever ``steps_per_call`` says (a host-checked run used to train only the
first row of each group of ``steps_per_call`` rows)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax.config import validate_config
from fosc_jax.errors import ConfigError
from fosc_jax.training import Trainer, executors

import tiny_config

ROWS, BATCH = 4, 16


def _config(executor: str, steps_per_call: int):
    cfg = tiny_config.get_config("dynamic")
    cfg.attack.bn_mode = "eval"          # every executor, host_compact included, may run it
    cfg.executor = executor
    cfg.steps_per_call = steps_per_call
    return cfg


def _epoch(executor: str, steps_per_call: int, threshold: float):
    """ROWS Dynamic steps through ``Trainer.run_steps`` from one initial state."""
    trainer = Trainer(_config(executor, steps_per_call), (28, 28, 1), 10)
    assert trainer.executor.name == executor
    state = trainer.init_state(jax.random.PRNGKey(3))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (ROWS * BATCH, 28, 28, 1), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, ROWS * BATCH), jnp.int32)
    indices = jnp.asarray(rng.permutation(ROWS * BATCH).reshape(ROWS, BATCH), jnp.int32)
    settings = trainer.settings_for_epoch(0).replace(threshold=jnp.float32(threshold))
    assert settings.early_exit
    state, metrics = trainer.run_steps(state, x, y, indices, settings)
    return jax.device_get((state, metrics))


@pytest.mark.parametrize("executor", ["compiled", "host", "host_compact"])
def test_two_steps_per_call_train_like_one_on_every_executor(executor):
    # FOSC lies between 0.38 and 0.8 after these steps: 0.6 stops some examples early.
    one_state, one = _epoch(executor, 1, threshold=0.6)
    two_state, two = _epoch(executor, 2, threshold=0.6)
    assert int(one_state.step) == int(two_state.step) == ROWS   # one step per row
    assert one["num_steps"].shape == two["num_steps"].shape == (ROWS, BATCH)
    np.testing.assert_array_equal(two["num_steps"], one["num_steps"])
    assert one["num_steps"].min() < one["num_steps"].max(), "no example stopped early"
    for a, b in zip(jax.tree_util.tree_leaves((two_state.params, two_state.batch_stats,
                                               two_state.opt_state)),
                    jax.tree_util.tree_leaves((one_state.params, one_state.batch_stats,
                                               one_state.opt_state))):
        # A scan compiles to other fusions than single steps: float32 rounding apart.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_auto_picks_the_host_exit_on_cpu_and_the_compiled_step_elsewhere():
    assert executors.resolve("auto", "cpu", "eval") == "host_compact"
    assert executors.resolve("auto", "cpu", "train") == "host"
    assert executors.resolve("auto", "gpu", "eval") == "compiled"
    assert executors.resolve("auto", "tpu", "train") == "compiled"
    assert executors.resolve("host", "gpu", "eval") == "host"


def test_compaction_needs_an_attack_that_treats_examples_independently():
    cfg = _config("host_compact", 1)
    cfg.attack.bn_mode = "train"
    with pytest.raises(ConfigError, match=r"config.executor = 'host_compact' is invalid.*"
                                          r"bn_mode = 'eval'"):
        validate_config(cfg, check_data=False)
    trainer = Trainer(_config("host", 1), (28, 28, 1), 10)
    trainer.config.attack.bn_mode = "train"
    with pytest.raises(ValueError, match="bn_mode = 'eval'"):
        executors.HostChecked(trainer, compact_min=2)


def test_an_unknown_executor_is_refused_naming_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"config.executor = 'gpu' is invalid: expected one "
                                          r"of \['auto', 'compiled', 'host', 'host_compact'\]"):
        validate_config(_config("gpu", 1), check_data=False)


def test_training_prints_the_executor_at_start_and_records_it_per_epoch(tmp_path, capsys):
    from fosc_jax import parallel, rundir
    from fosc_jax.training import train_and_evaluate
    from test_training import tiny_dataset

    cfg = tiny_config.get_config("dynamic")
    cfg.attack.bn_mode = "eval"
    train_and_evaluate(cfg, str(tmp_path), dataset=tiny_dataset(), mesh=parallel.make_mesh(1))
    want = "host_compact" if jax.default_backend() == "cpu" else "compiled"
    assert f"executor {want} (config.executor = 'auto', backend " in capsys.readouterr().out
    assert [r["executor"] for r in rundir.read_metrics(str(tmp_path))] == [want]


def test_each_epoch_reuses_the_compiled_step(tmp_path, caplog):
    """jit keys on input placement: the host-set epoch scalar used to enter unplaced, so the
    first step of every epoch compiled its own program (each curriculum level twice)."""
    import logging

    from fosc_jax.training import train_and_evaluate
    cfg = tiny_config.get_config("standard", epochs=2)
    cfg.executor = "compiled"
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        train_and_evaluate(cfg, str(tmp_path / "run"))
    compiles = [r for r in caplog.records if "Compiling jit(_one_indexed)" in r.getMessage()]
    assert len(compiles) == 1, [r.getMessage()[:200] for r in compiles]
