"""The shipped configs: each loads as train.py loads it and validates; the paper's settings
match the table in docs/method.md; each setting has one source in fosc_jax/config.py.

No training: every test here reads configs only and takes well under a second."""
import glob
import os
import re
from fractions import Fraction

import pytest
from absl import flags
from ml_collections import config_flags

from fosc_jax import config as config_lib
from fosc_jax.config import validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
DEFENSES = ("unsecured", "standard", "curriculum", "dynamic", "fgsm_pgd")
# Columns of docs/method.md's table, the settings that build them and their config files.
PAPER_COLUMNS = {
    "MNIST": (config_lib.mnist_config, [f"mnist_{d}" for d in DEFENSES]),
    "CIFAR-10": (config_lib.cifar_config, [f"cifar_{d}" for d in DEFENSES]),
    "CIFAR-10, WideResNet": (config_lib.cifar_wrn_config,
                             ["cifar_wrn_standard", "cifar_wrn_dynamic"]),
}


def load(path):
    """The config as train.py gets it: ml_collections' config_flags, locked."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    values(["train.py", f"--config={path}"])
    return values.config


def config_file(name):
    return os.path.join(ROOT, "configs", f"{name}.py")


def flat(config):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update({f"{key}.{k}": v for k, v in flat(value).items()})
        else:
            out[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


def paper_table():
    """{row label: {column: cell}} of "The paper's settings (section 5.1)" in docs/method.md,
    a cell reading "same" replaced by the one to its left."""
    with open(os.path.join(ROOT, "docs", "method.md")) as f:
        section = f.read().split("## The paper's settings (section 5.1)", 1)[1]
    lines = section.strip().split("\n\n")[0].splitlines()
    columns = [c.strip() for c in lines[0].strip().strip("|").split("|")][1:]
    table = {}
    for line in lines[2:]:
        label, *cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for i, cell in enumerate(cells):
            if cell == "same":
                cells[i] = cells[i - 1]
        table[label] = dict(zip(columns, cells))
    return table


def numbers(cell):
    return [float(Fraction(n)) for n in re.findall(r"\d+(?:/\d+)?(?:\.\d+)?(?:e-?\d+)?",
                                                    cell.split("(")[0])]


def expected_from_table(table, column):
    """The config fields a column of the table states."""
    eps_cell = table["eps, training attack"][column]
    epochs, t_prime = numbers(table["epochs T, T'"][column])
    lr, momentum = numbers(table["SGD"][column])
    weight_decay, batch = numbers(table["weight decay, batch"][column])
    assert "step eps/4" in eps_cell  # the configs' step_size None means eps / 4
    return {
        "model.name": re.search(r"`(\w+)`", table["model"][column]).group(1),
        "attack.eps": numbers(eps_cell)[0],
        "attack.num_steps": int(re.search(r"PGD-(\d+)", eps_cell).group(1)),
        "attack.step_size": None,
        "num_epochs": epochs, "defense.t_prime": t_prime,
        "optim.lr": lr, "optim.momentum": momentum,
        "optim.lr_drop_epochs": tuple(numbers(table["lr / 10 at epochs"][column])),
        "optim.lr_drop_factor": 0.1,
        "optim.weight_decay": weight_decay, "batch_size": batch,
        "data.augment": "none" if table["augmentation"][column] == "none" else "cifar",
        "attack.bn_mode": table["attack BN mode (ours)"][column],
        "data.name": "mnist" if column == "MNIST" else "cifar10",
    }


def test_the_table_is_found():
    table = paper_table()
    assert set(PAPER_COLUMNS) == set(table["model"])
    assert len(table) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_every_config_loads_as_train_py_loads_it_and_validates(path):
    config = load(path)
    name = os.path.basename(path)[:-3]
    assert config.name == name  # runs/<config.name> is the default workdir
    validate_config(config, num_devices=1, check_data=config.data.source != "tfds")
    validate_config(config, num_devices=8, check_data=False)


def test_a_config_loads_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # config files import only the installed fosc_jax package
    assert load(config_file("cifar_dynamic")).defense.name == "dynamic"


@pytest.mark.parametrize("column", PAPER_COLUMNS)
def test_paper_configs_match_docs_method_table(column):
    expected = expected_from_table(paper_table(), column)
    setting, names = PAPER_COLUMNS[column]
    for name in names:
        got = flat(load(config_file(name)))
        for field, value in expected.items():
            assert got[field] == pytest.approx(value) if isinstance(value, float) else \
                got[field] == value, (name, field, got[field], value)
        assert got["defense.c_max"] == 0.5 and got["attack.random_start"] is True


@pytest.mark.parametrize("column", PAPER_COLUMNS)
def test_each_paper_setting_has_one_source(column):
    """configs/<setting>_<defense>.py is fosc_jax.config's setting for that defense, field by
    field (fosc_jax/reproduce builds its runs from mnist_config too)."""
    setting, names = PAPER_COLUMNS[column]
    for name in names:
        defense = load(config_file(name)).defense.name
        assert flat(load(config_file(name))) == flat(setting(defense)), name


def test_mnist_setting_is_base_config_but_the_attacks_batchnorm():
    base = flat(config_lib.base_config())
    for defense in DEFENSES + ("trades", "dynamic_trades"):
        mnist = flat(config_lib.mnist_config(defense))
        differ = {k for k in base if base[k] != mnist[k]}
        assert differ <= {"name", "defense.name", "attack.bn_mode"}, differ
        assert mnist["attack.bn_mode"] == "eval" and mnist["name"] == f"mnist_{defense}"


@pytest.mark.parametrize("name, setting, changed", [
    ("quickstart", "quickstart_config", {}),
    ("quickstart_trades", "quickstart_config", {"attack.bn_mode": "eval"}),
    ("quickstart_dynamic_trades", "quickstart_config",
     {"attack.bn_mode": "eval", "defense.c_max": 0.1}),
    ("cifar_trades", "cifar_config", {"attack.bn_mode": "eval", "attack.step_size": 0.007}),
    ("cifar_dynamic_trades", "cifar_config",
     {"attack.bn_mode": "eval", "attack.step_size": 0.007, "defense.c_max": 0.15}),
])
def test_variants_change_only_what_differs(name, setting, changed):
    got = flat(load(config_file(name)))
    base = flat(getattr(config_lib, setting)(got["defense.name"]))
    assert {k: v for k, v in got.items() if base[k] != v} == changed


def test_quickstart_is_small():
    q = load(config_file("quickstart"))
    assert (q.data.source, q.attack.eps, q.num_epochs, q.defense.t_prime, q.batch_size) == \
        ("bundled", 0.1, 4, 4, 64)
    assert tuple(q.optim.lr_drop_epochs) == (3,) and q.attack.bn_mode == "train"


def test_every_config_is_covered_here():
    named = {n for _, names in PAPER_COLUMNS.values() for n in names}
    named |= {"quickstart", "quickstart_trades", "quickstart_dynamic_trades", "cifar_trades",
              "cifar_dynamic_trades"}
    shipped = {os.path.basename(p)[:-3] for p in CONFIGS}
    assert shipped == named, (f"configs/ and this file disagree on {shipped ^ named}: name a new "
                              "config in PAPER_COLUMNS or test_variants_change_only_what_differs")
