"""Training: configs, validation messages, every defense for an epoch, exact resume,
1 vs 4 devices, load_classifier and the train.py command line."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax import rundir, parallel
from fosc_jax.config import ConfigError, base_config, validate_config
from fosc_jax.data import Dataset
from fosc_jax.training import train_and_evaluate

import tiny_config as tiny_config_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def load_config_file(path):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def tiny_dataset(n_train=64, n_test=16, seed=0):
    """Two-class 'images' a small CNN can separate: bright vs dark top half."""
    rng = np.random.default_rng(seed)
    def make(n):
        y = rng.integers(0, 2, n).astype(np.int32)
        x = rng.integers(0, 80, (n, 28, 28, 1)).astype(np.uint8)
        x[y == 1, :14] += 150
        return x, y
    (xt, yt), (xe, ye) = make(n_train), make(n_test)
    return Dataset(name="mnist", x_train=xt, y_train=yt, x_test=xe, y_test=ye, num_classes=10)


def tiny_config(defense="dynamic", epochs=1):
    return tiny_config_module.get_config(defense, epochs)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_every_config_file_loads_and_validates(path):
    config = load_config_file(path)
    validate_config(config, num_devices=1, check_data=False)
    assert config.defense.name in config.name or config.name == "quickstart"


def test_paper_defaults():
    c = load_config_file(os.path.join(ROOT, "configs", "cifar_dynamic.py"))
    assert (c.batch_size, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (128, 0.01, 0.9, 1e-4)
    assert (c.num_epochs, c.defense.t_prime, tuple(c.optim.lr_drop_epochs)) == (120, 100, (60, 100))
    assert c.attack.eps == pytest.approx(8 / 255) and c.attack.num_steps == 10
    m = load_config_file(os.path.join(ROOT, "configs", "mnist_dynamic.py"))
    assert (m.num_epochs, m.defense.t_prime, m.attack.eps, m.defense.c_max) == (50, 40, 0.3, 0.5)


@pytest.mark.parametrize("field, value, match", [
    ("data.name", "svhn", r"config.data.name = 'svhn' is invalid: expected one of \['mnist', 'cifar10'\]"),
    ("model.name", "vgg", r"config.model.name = 'vgg' is invalid: expected one of"),
    ("defense.name", "mart", r"config.defense.name = 'mart'.*'dynamic_trades'"),
    ("attack.eps", 0.0, r"config.attack.eps = 0.0 is invalid: must be > 0"),
    ("defense.c_max", -0.1, r"config.defense.c_max = -0.1 is invalid: must be >= 0"),
    ("defense.t_prime", 60, r"config.defense.t_prime = 60 is invalid: must satisfy 0 < T' <= num_epochs \(50\)"),
    ("batch_size", 130, r"config.batch_size = 130 is invalid: the global batch must be divisible by the device count \(4\)"),
    ("data.source", "files:/no/such/dir", r"config.data.source = 'files:/no/such/dir' is invalid: the path '/no/such/dir' does not exist"),
    ("data.source", "s3://bucket", r"expected 'tfds', 'bundled' or 'files:DIR'"),
])
def test_validation_names_the_field_and_accepted_values(field, value, match):
    c = base_config()
    section, _, name = field.rpartition(".")
    (c[section] if section else c)[name] = value
    with pytest.raises(ConfigError, match=match):
        validate_config(c, num_devices=4)


def params_of(workdir):
    clf = rundir.load_classifier(workdir)
    return jax.tree_util.tree_leaves(jax.device_get(clf.variables))


# (trades and dynamic_trades train, resume and evaluate in tests/test_trades.py)
@pytest.mark.parametrize("defense", ["unsecured", "standard", "curriculum", "dynamic", "fgsm_pgd"])
def test_each_defense_trains_one_epoch(defense, tmp_path):
    ds = tiny_dataset()
    row = train_and_evaluate(tiny_config(defense), str(tmp_path), dataset=ds,
                             mesh=parallel.make_mesh(1))
    assert row["epoch"] == 1 and np.isfinite(row["train_loss"])
    expected_steps = {"unsecured": 0, "standard": 3, "fgsm_pgd": 1}
    if defense in expected_steps:
        assert row["attack_steps_mean"] == expected_steps[defense]
    if defense == "curriculum":  # level 0 in epoch 0: the whole batch is clean
        assert row["curriculum_k"] == 0 and row["attack_steps_mean"] == 0
    if defense == "dynamic":
        assert row["c_t"] == 0.5 and 1 <= row["attack_steps_mean"] <= 3
    sample = np.load(tmp_path / "fosc" / "epoch_0001.npz", allow_pickle=False)
    assert sample["fosc"].shape == (64,)
    # No attack ran (unsecured, curriculum level 0): no FOSC to record.
    assert (defense in ("unsecured", "curriculum")) == bool(np.all(np.isnan(sample["fosc"])))


def test_resume_is_bitwise_exact_and_metrics_have_each_epoch_once(tmp_path):
    ds, mesh = tiny_dataset(), parallel.make_mesh(1)
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    train_and_evaluate(tiny_config("dynamic", epochs=3), full, dataset=ds, mesh=mesh)
    first = tiny_config("dynamic", epochs=3)
    first.stop_after_epochs = 2  # a preempted run: stops after its epoch-2 checkpoint
    train_and_evaluate(first, split, dataset=ds, mesh=mesh)
    assert [r["epoch"] for r in rundir.read_metrics(split)] == [1, 2]
    # Simulate a crash after the metrics line of an epoch whose checkpoint never landed.
    rundir.metrics.append_metrics(split, {"epoch": 3, "train_loss": -1.0})
    train_and_evaluate(tiny_config("dynamic", epochs=3), split, dataset=ds, mesh=mesh)
    for a, b in zip(params_of(full), params_of(split)):
        np.testing.assert_array_equal(a, b)
    rows = rundir.read_metrics(split)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[2]["train_loss"] != -1.0
    # A finished run is not trained again.
    again = train_and_evaluate(tiny_config("dynamic", epochs=3), split, dataset=ds, mesh=mesh)
    assert again == {} and len(rundir.read_metrics(split)) == 3


def test_resume_refuses_a_different_config(tmp_path):
    ds, mesh = tiny_dataset(), parallel.make_mesh(1)
    c = tiny_config("dynamic")
    c.stop_after_epochs = 1
    train_and_evaluate(c, str(tmp_path), dataset=ds, mesh=mesh)
    other = tiny_config("dynamic")
    other.attack.eps = 0.1
    with pytest.raises(ValueError, match=r"different config \(attack.eps: 0.3 -> 0.1\)"):
        train_and_evaluate(other, str(tmp_path), dataset=ds, mesh=mesh)


def test_one_and_four_devices_agree(tmp_path):
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (tests/conftest.py forces 4 CPU devices)")
    ds = tiny_dataset()
    one = train_and_evaluate(tiny_config("standard"), str(tmp_path / "one"), dataset=ds,
                             mesh=parallel.make_mesh(1))
    four = train_and_evaluate(tiny_config("standard"), str(tmp_path / "four"), dataset=ds,
                              mesh=parallel.make_mesh(4))
    for a, b in zip(params_of(str(tmp_path / "one")), params_of(str(tmp_path / "four"))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert one["train_loss"] == pytest.approx(four["train_loss"], rel=1e-4)


def test_load_classifier_gives_pure_logits_of_the_checkpoint(tmp_path):
    ds = tiny_dataset()
    train_and_evaluate(tiny_config("standard"), str(tmp_path), dataset=ds,
                       mesh=parallel.make_mesh(1))
    before = _tree(tmp_path)
    clf = rundir.load_classifier(str(tmp_path))
    assert _tree(tmp_path) == before, "load_classifier changed the run directory"
    assert clf.config.defense.name == "standard" and clf.epoch == 1
    x = jnp.asarray(ds.x_test[:4], jnp.float32) / 255.0
    direct = clf.model.apply(jax.device_get(clf.variables), x, train=False)
    np.testing.assert_allclose(clf.logits(x), direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(clf.logits)(x), direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a fosc_jax run directory"):
        rundir.load_classifier(str(tmp_path / "nothing"))
    untrained = tmp_path / "untrained"  # a config.json, no checkpoints: none is created
    untrained.mkdir()
    (untrained / "config.json").write_text(tiny_config("standard").to_json())
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        rundir.load_classifier(str(untrained))
    assert os.listdir(untrained) == ["config.json"]


def _tree(root) -> dict:
    """Every file and folder under ``root`` with its size and modification time."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = (os.path.getsize(path), os.path.getmtime(path))
    return out


def test_train_cli_rejects_bad_override_before_compute(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--config",
         os.path.join(ROOT, "configs", "quickstart.py"), "--config.defense.name=magic",
         "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0
    assert "config.defense.name = 'magic' is invalid" in proc.stderr
    assert not os.path.exists(tmp_path / "checkpoints")


def test_train_cli_runs_and_resumes(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config",
           os.path.join(ROOT, "tests", "tiny_config.py"), "--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 1: loss" in proc.stdout
    assert proc.stdout.splitlines()[-1] == (f"fosc_jax: done, results in {tmp_path}; next: "
                                            f"python evaluate.py --workdir {tmp_path}")
    proc = subprocess.run(cmd + ["--config.num_epochs=2", "--config.defense.t_prime=2"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "different config" in proc.stderr  # T' changed
    proc = subprocess.run(cmd + ["--config.num_epochs=2"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed" in proc.stdout and "epoch 2: loss" in proc.stdout
    assert [r["epoch"] for r in rundir.read_metrics(str(tmp_path))] == [1, 2]
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["num_epochs"] == 2


@pytest.mark.skipif(not os.environ.get("FOSC_JAX_MNIST_DIR"),
                    reason="set FOSC_JAX_MNIST_DIR to a folder with the MNIST IDX files")
def test_real_mnist_smoke(tmp_path):
    c = tiny_config("dynamic")
    c.data.source = "files:" + os.environ["FOSC_JAX_MNIST_DIR"]
    c.data.train_limit = 128
    c.batch_size = 64
    row = train_and_evaluate(c, str(tmp_path), mesh=parallel.make_mesh(1))
    assert row["epoch"] == 1 and np.isfinite(row["train_loss"])


def test_curriculum_plateau_rule_raises_level_and_checkpoints_it(tmp_path):
    c = tiny_config("curriculum", epochs=2)
    c.defense.curriculum_rule = "plateau"
    c.defense.curriculum_patience = 0  # no patience: the level rises after every epoch
    train_and_evaluate(c, str(tmp_path), dataset=tiny_dataset(), mesh=parallel.make_mesh(1))
    rows = rundir.read_metrics(str(tmp_path))
    assert [r["curriculum_k"] for r in rows] == [0, 1]
    assert rows[0]["attack_steps_mean"] == 0
    # Level 1 splits the batch into PGD-0 and PGD-1 halves: half a step per example.
    assert rows[1]["attack_steps_mean"] == pytest.approx(0.5)


def test_preemption_mid_epoch_checkpoints_and_resumes_bitwise(tmp_path):
    ds, mesh = tiny_dataset(), parallel.make_mesh(1)  # 4 steps per epoch, chunks of 2
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    train_and_evaluate(tiny_config("dynamic", epochs=2), full, dataset=ds, mesh=mesh)
    stopped = train_and_evaluate(tiny_config("dynamic", epochs=2), split, dataset=ds, mesh=mesh,
                                 should_stop=lambda step: step == 6)  # mid epoch 2
    assert stopped["epoch"] == 1
    assert sorted(ocp_steps(split)) == [4, 6]  # end of epoch 1, then the preemption point
    assert [r["epoch"] for r in rundir.read_metrics(split)] == [1]
    train_and_evaluate(tiny_config("dynamic", epochs=2), split, dataset=ds, mesh=mesh)
    for a, b in zip(params_of(full), params_of(split)):
        np.testing.assert_array_equal(a, b)
    rows = rundir.read_metrics(split)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["resumed_mid_epoch"] is True


def ocp_steps(workdir):
    return [int(name) for name in os.listdir(os.path.join(workdir, "checkpoints"))
            if name.isdigit()]


def test_sigterm_sets_the_preemption_flag():
    import signal

    from fosc_jax.training import PreemptionFlag
    flag = PreemptionFlag()
    try:
        assert not flag(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag(0)
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGTERM) is not flag._handle
