"""The newcomer path (issue 12): the headline command without prepared data, --help of every
CLI, shortened runs with a scaled schedule, configs that validate on 1-8 devices."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from fosc_jax import parallel
from fosc_jax.defenses import DEFENSES
from fosc_jax.defenses.base import DynamicSchedule
from fosc_jax.config import validate_config
from fosc_jax.data import load_dataset
from fosc_jax.data.tfds_source import DataNotPrepared, require_prepared
from fosc_jax.evaluation.suite import ATTACKS
from fosc_jax.shorten import scale_schedule
from fosc_jax.training import train_and_evaluate
from test_training import load_config_file, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _clean_env(home) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
    env.update(HOME=str(home), PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               # an unreachable proxy: any download attempt would fail, not hang
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    return env


def test_headline_command_without_data_says_how_and_leaves_nothing(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    start = time.time()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config",
                           os.path.join(ROOT, "configs", "cifar_dynamic.py")], cwd=cwd,
                          env=_clean_env(home), capture_output=True, text=True, timeout=120)
    assert time.time() - start < 60
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert len(lines[0]) < 300 + len(str(home))  # short: the fix, not a manual
    for needed in ("cifar10 is not prepared", "download_and_prepare", "files:DIR",
                   "data_batch_1", ".npz", "bundled"):
        assert needed in lines[0], needed
    assert os.listdir(cwd) == [] and os.listdir(home) == []  # no runs/, no ~/tensorflow_datasets


def _prepared(root, name="mnist", version="3.0.1"):
    folder = root / name / version
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    return str(root)


@pytest.mark.filterwarnings("ignore:the training set holds")  # tfds' mock draws random labels
def test_prepared_tfds_data_trains(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataNotPrepared, match="mnist is not prepared"):
        require_prepared("mnist", str(tmp_path / "empty"))
    config = tiny_config("standard")
    config.data.source, config.data.data_dir = "tfds", _prepared(tmp_path / "tfds")
    config.data.train_limit, config.eval.num_examples = 0, 8
    with tfds.testing.mock_data(num_examples=32):  # tfds' own stand-in for prepared files
        row = train_and_evaluate(config, str(tmp_path / "run"), mesh=parallel.make_mesh(1))
    assert row["epoch"] == 1 and np.isfinite(row["train_loss"])


def test_tfds_missing_importlib_resources_is_one_clear_line(monkeypatch, tmp_path):
    def data_source(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'")

    monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                        types.SimpleNamespace(data_source=data_source))
    with pytest.raises(ImportError, match=r"pip install importlib_resources.*files:DIR"):
        load_dataset("tfds", "mnist", data_dir=_prepared(tmp_path))


@pytest.mark.parametrize("cmd", [["train.py"], ["evaluate.py"], ["-m", "fosc_jax.reporting"]],
                         ids=["train", "evaluate", "report"])
def test_help_lists_configs_sources_and_attacks(cmd):
    proc = subprocess.run([sys.executable, *cmd, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode in (0, 1) and not proc.stderr, proc.stderr[-2000:]  # absl: 1
    for path in CONFIGS:
        assert f"configs/{os.path.basename(path)}" in proc.stdout
    for word in ["tfds", "files:DIR", "bundled", *ATTACKS]:
        assert word in proc.stdout
    assert "--workdir" in proc.stdout


def test_shortened_runs_validate_and_scale_the_schedule():
    for path in CONFIGS:
        config = load_config_file(path)
        config.num_epochs = 2  # a plain override: only what the defense uses is checked
        if not issubclass(DEFENSES[config.defense.name], DynamicSchedule):  # no T' to check
            validate_config(config, num_devices=1, check_data=False)
        short = scale_schedule(load_config_file(path), 2)
        for devices in (1, 2, 4, 8):  # every shipped config, on 1-8 devices
            validate_config(short, num_devices=devices, check_data=False)
            validate_config(load_config_file(path), num_devices=devices, check_data=False)
    cifar = scale_schedule(load_config_file(os.path.join(ROOT, "configs", "cifar_dynamic.py")), 2)
    # 120 epochs -> 2: drops 60, 100 -> round(1.0), round(1.67); T' 100 -> 2; FGSM 20 -> 0
    assert (cifar.num_epochs, tuple(cifar.optim.lr_drop_epochs), cifar.defense.t_prime,
            cifar.defense.fgsm_epochs, cifar.defense.curriculum_patience) == (2, (1, 2), 2, 0, 1)
    mnist = scale_schedule(load_config_file(os.path.join(ROOT, "configs", "mnist_fgsm_pgd.py")), 10)
    # 50 -> 10: drops 20, 40 -> 4, 8; T' 40 -> 8; FGSM 20 -> 4; patience 10 -> 2
    assert (tuple(mnist.optim.lr_drop_epochs), mnist.defense.t_prime, mnist.defense.fgsm_epochs,
            mnist.defense.curriculum_patience) == ((4, 8), 8, 4, 2)
