"""The experiment config: defaults, and validation of a whole ConfigDict in one place.

:func:`base_config` lists every field with its default. The settings an experiment starts
from are built on it, each the one source of its values: :func:`mnist_config` (the paper's
MNIST setting), :func:`cifar_config` (its CIFAR-10 setting), :func:`cifar_wrn_config`
(WideResNet-34-10 on CIFAR-10) and :func:`quickstart_config` (the bundled MNIST subset, minutes
on a CPU). Every file in ``configs/`` calls one of them and changes only what differs.
:func:`validate_config` runs before any compute and raises :class:`ConfigError` naming the
field, the bad value and the accepted values.
"""
from __future__ import annotations

import math
import os
from typing import Any, Optional

import ml_collections

from fosc_jax.errors import ConfigError

BN_MODES = ("train", "eval")
DTYPES = ("float32", "bfloat16")
# How training steps run (fosc_jax.training.executors); the numbers never depend on it.
EXECUTORS = ("auto", "compiled", "host", "host_compact")
# Most attack steps per training step. The step's attack is unrolled at trace time (every
# executor; host_compact/early exit only chunk it), so tracing time and compile memory grow
# with it: 100000 steps traced for 10+ minutes at 5 GB. The paper uses 10-40.
MAX_ATTACK_STEPS = 1000


def base_config() -> ml_collections.ConfigDict:
    """Every field and its default: the paper's MNIST Dynamic AT values (section 5.1,
    docs/method.md), except ``attack.bn_mode``. That stays "train" here (Madry et al.'s choice
    and the CIFAR-10 setting; tests and benchmarks start from base_config), while
    :func:`mnist_config` sets "eval", without which eps 0.3 collapses every defense."""
    c = ml_collections.ConfigDict()
    c.name = "mnist_dynamic"
    c.seed = 0
    c.num_epochs = 50
    c.batch_size = 128            # global batch, split over devices

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"        # "tfds", "files:DIR" (IDX, CIFAR binary, .npz) or "bundled"
    c.data.name = "mnist"
    c.data.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir
    c.data.augment = "none"       # "cifar": 4-pixel pad + random crop + flip, on device
    c.data.train_limit = 0        # train on N examples of the training split (0: all)
    c.data.subset = "random"      # which N: "random" (seeded by config.seed) or "first"

    c.model = ml_collections.ConfigDict()
    c.model.name = "mnist_cnn"
    c.model.dtype = "float32"     # compute dtype; params and optimizer state stay float32

    c.attack = ml_collections.ConfigDict()
    c.attack.eps = 0.3
    c.attack.step_size = ml_collections.config_dict.placeholder(float)  # None: eps / 4
    c.attack.num_steps = 10       # K
    c.attack.random_start = True
    c.attack.bn_mode = "train"    # BatchNorm mode while attacking: "train" (Madry) or "eval"
                                  # (mnist_config: "train" collapses at eps 0.3)

    c.defense = ml_collections.ConfigDict()
    c.defense.name = "dynamic"
    c.defense.c_max = 0.5
    c.defense.t_prime = 40        # c_t reaches 0 at epoch T'
    c.defense.fosc_origin = "clean"   # released code: "start"
    c.defense.loss_weighting = False  # released code: weight loss by adversarial CE from epoch 1
    c.defense.curriculum_rule = "fixed"
    c.defense.curriculum_max_k = 10
    c.defense.curriculum_patience = 10
    c.defense.fgsm_epochs = 20
    c.defense.trades_beta = 6.0   # TRADES / Dynamic TRADES: weight of the KL term

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 0.01
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.lr_drop_epochs = (20, 40)
    c.optim.lr_drop_factor = 0.1

    c.eval = ml_collections.ConfigDict()
    c.eval.num_examples = 1000    # fixed test subset for the per-epoch clean/PGD-10 numbers
    c.eval.batch_size = 500

    c.log_every = 50              # steps between progress-bar metric syncs
    c.steps_per_call = 1          # >1: lax.scan this many steps per compiled call
    c.executor = "auto"           # auto (host_compact/host on CPU, compiled elsewhere),
                                  # compiled, host, host_compact (needs attack.bn_mode eval)
    c.quiet = False
    c.fosc_sample_size = 2000     # per-epoch FOSC values saved for the density figures
    c.checkpoint_every = 1        # epochs
    c.checkpoint_keep = 3
    c.stop_after_epochs = 0       # stop (checkpointed) after N epochs this run; 0: never
    return c


def _named(name: str, defense: str) -> ml_collections.ConfigDict:
    c = base_config()
    c.name = name
    c.defense.name = defense
    return c


def mnist_config(defense: str) -> ml_collections.ConfigDict:
    """The paper's MNIST setting for ``defense``, the one source of it (configs/mnist_*.py and
    the reproduction use it): 4-layer CNN, eps 0.3, PGD-10 of step eps/4, 50 epochs, T' 40,
    SGD lr 0.01, momentum 0.9, / 10 at epochs 20 and 40, weight decay 1e-4, batch 128, no
    augmentation. These are base_config's values; only the attack's BatchNorm mode differs."""
    c = _named(f"mnist_{defense}", defense)
    # The attack sees BatchNorm in inference mode, as in the authors' released Keras code
    # (its attack's sess.run never feeds the learning phase). With train-mode BN at eps 0.3
    # and lr 0.01 the dense-128 ReLUs all die within ~20 steps and every defense collapses
    # to a constant output (RESULTS.md, "The eps 0.3 collapse").
    c.attack.bn_mode = "eval"
    return c


def cifar_config(defense: str) -> ml_collections.ConfigDict:
    """The paper's CIFAR-10 setting for ``defense`` (configs/cifar_*.py): what differs from
    the MNIST setting. The attack (PGD-10 of step eps/4, random start), SGD (lr 0.01,
    momentum 0.9, weight decay 1e-4) and batch 128 are the same."""
    c = _named(f"cifar_{defense}", defense)
    c.data.name = "cifar10"
    c.data.augment = "cifar"      # 4-pixel pad + random crop + horizontal flip, on device
    c.model.name = "cifar_cnn"    # the paper's 8-layer CNN
    c.attack.eps = 8 / 255
    c.attack.bn_mode = "train"    # BatchNorm on the attacked batch's statistics (Madry)
    c.num_epochs = 120
    c.defense.t_prime = 100       # Dynamic AT: c_t reaches 0 at epoch T'
    c.optim.lr_drop_epochs = (60, 100)
    return c


def cifar_wrn_config(defense: str) -> ml_collections.ConfigDict:
    """WideResNet-34-10 on CIFAR-10 with Madry's schedule (lr 0.1, /10 at 50% and 75%,
    weight decay 2e-4); 120 epochs, T' = 100 for Dynamic (configs/cifar_wrn_*.py)."""
    c = cifar_config(defense)
    c.name = f"cifar_wrn_{defense}"
    c.model.name = "wrn34_10"
    c.optim.lr = 0.1
    c.optim.weight_decay = 2e-4
    c.optim.lr_drop_epochs = (60, 90)
    return c


def quickstart_config(defense: str) -> ml_collections.ConfigDict:
    """Minutes on a CPU, offline (configs/quickstart*.py): the MNIST CNN and optimizer on the
    2,000 training images bundled in the package, 4 epochs (T' 4, lr / 10 at epoch 3), eps 0.1
    (the paper's 0.3 needs many more epochs before an MNIST model leaves chance level), batch
    64, and the per-epoch test on 500 images. The attack's BatchNorm is in train mode."""
    c = _named("quickstart" if defense == "dynamic" else f"quickstart_{defense}", defense)
    c.data.source = "bundled"     # 2,000 MNIST training images inside the package
    c.attack.eps = 0.1
    c.num_epochs = 4
    c.defense.t_prime = 4
    c.batch_size = 64
    c.optim.lr_drop_epochs = (3,)
    c.eval.num_examples = 500     # clean / PGD-10 accuracy on 500 test images each epoch
    c.eval.batch_size = 250
    c.log_every = 10
    return c


def config_get(config: Any, path, default: Any = None) -> Any:
    """The value at ``path`` (dotted string or tuple of keys) of a ConfigDict, a dict or a
    JSON record; ``default`` where a part is missing or None."""
    value = config
    for part in (path.split(".") if isinstance(path, str) else path):
        if value is None:
            return default
        try:
            value = value[part]
        except (KeyError, TypeError, AttributeError, IndexError):
            value = getattr(value, part, None)
    return default if value is None else value


def _fail(field: str, value: Any, expected: str) -> None:
    raise ConfigError(f"config.{field} = {value!r} is invalid: {expected}.")


def _lr_drops(drops: Any) -> None:
    """optim.lr_drop_epochs: a sequence of epochs >= 1 (the lr drops before that epoch)."""
    ok = isinstance(drops, (list, tuple)) and all(
        isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in drops)
    if not ok:
        _fail("optim.lr_drop_epochs", drops, "must be a tuple of integer epochs >= 1, e.g. "
              "(20, 40), or () for no drop")


def _one_of(config: ml_collections.ConfigDict, field: str, choices) -> None:
    value = config_get(config, field)
    if value not in choices:
        _fail(field, value, f"expected one of {list(choices)}")


def _number(config: ml_collections.ConfigDict, field: str, lo: float, hi: float = math.inf,
            lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> None:
    """``field`` must be a finite number (an int if ``integer``) in the given interval."""
    value = config_get(config, field)
    left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
    kind = "an integer" if integer else "a finite number"
    where = f"{left}{lo:g}, {hi:g}{right}".replace("inf]", "inf)")
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and (not integer or float(value).is_integer()) and math.isfinite(value)
          and (value > lo if lo_open else value >= lo)
          and (value < hi if hi_open else value <= hi))
    if not ok:
        _fail(field, value, f"must be {kind} in {where}")


def validate_config(config: ml_collections.ConfigDict, num_devices: Optional[int] = None,
                    check_data: bool = True) -> ml_collections.ConfigDict:
    """Check every field a run depends on; raise ConfigError with a fix-it message."""
    # The registries own the names (imported here: config stays importable on its own).
    from fosc_jax.attacks import FOSC_ORIGINS
    from fosc_jax.data import AUGMENT_NAMES, KNOWN_DATASETS
    from fosc_jax.data.subset import SUBSET_MODES
    from fosc_jax.defenses import DEFENSES
    from fosc_jax.models import MODEL_NAMES

    _one_of(config, "data.name", tuple(KNOWN_DATASETS))
    _one_of(config, "model.name", MODEL_NAMES)
    _one_of(config, "model.dtype", DTYPES)
    _one_of(config, "defense.name", tuple(DEFENSES))
    _one_of(config, "attack.bn_mode", BN_MODES)
    _one_of(config, "defense.fosc_origin", FOSC_ORIGINS)
    _one_of(config, "data.augment", AUGMENT_NAMES)
    _one_of(config, "data.subset", SUBSET_MODES)
    if not (isinstance(config.attack.eps, (int, float)) and 0 < config.attack.eps <= 1):
        _fail("attack.eps", config.attack.eps, "must be > 0 and <= 1 (pixels lie in [0, 1]; e.g. "
              "0.3 for MNIST, 8/255 for CIFAR-10)")
    step_size = config.attack.step_size
    if step_size is not None and not (isinstance(step_size, (int, float))
                                      and 0 < step_size < math.inf):
        _fail("attack.step_size", step_size, "must be a finite number > 0, or None for eps/4")
    steps = config.attack.num_steps
    if not (isinstance(steps, int) and not isinstance(steps, bool)
            and 1 <= steps <= MAX_ATTACK_STEPS):
        _fail("attack.num_steps", steps, f"must be an integer in [1, {MAX_ATTACK_STEPS}]: the "
              "training attack is unrolled into the compiled step, so compile time and memory "
              "grow with it (the paper uses 10-40)")
    _lr_drops(config.optim.lr_drop_epochs)
    if int(config.num_epochs) < 1:
        _fail("num_epochs", config.num_epochs, "must be >= 1")
    if config.defense.c_max < 0:
        _fail("defense.c_max", config.defense.c_max, "must be >= 0")
    DEFENSES[config.defense.name].validate(config)  # the defense's own fields
    if not config.optim.lr > 0:
        _fail("optim.lr", config.optim.lr, "must be > 0")
    if config.optim.weight_decay < 0:
        _fail("optim.weight_decay", config.optim.weight_decay, "must be >= 0")
    if int(config.batch_size) < 1:
        _fail("batch_size", config.batch_size, "must be >= 1")
    if num_devices is not None and config.batch_size % num_devices:
        _fail("batch_size", config.batch_size,
              f"the global batch must be divisible by the device count ({num_devices}); "
              f"use a multiple of {num_devices}")
    if config.eval.num_examples < 0:
        _fail("eval.num_examples", config.eval.num_examples, "must be >= 0")
    if config.eval.batch_size < 1:  # any size: evaluation pads its batches to the devices
        _fail("eval.batch_size", config.eval.batch_size, "must be >= 1")
    # Numbers that used to slip through (NaN/inf train silently; 0 or negatives fail late).
    _number(config, "seed", 0, integer=True)
    _number(config, "defense.c_max", 0)
    _number(config, "optim.lr", 0, lo_open=True)
    _number(config, "optim.momentum", 0, 1)
    _number(config, "optim.weight_decay", 0)
    _number(config, "optim.lr_drop_factor", 0, 1, lo_open=True)
    _number(config, "data.train_limit", 0, integer=True)
    _number(config, "stop_after_epochs", 0, integer=True)
    _number(config, "fosc_sample_size", 0, integer=True)
    _number(config, "checkpoint_every", 1, integer=True)
    if not (isinstance(config.checkpoint_keep, int) and config.checkpoint_keep >= 1):
        _fail("checkpoint_keep", config.checkpoint_keep,
              "must be an integer >= 1 (0 would delete every checkpoint, this run's and any "
              "it resumes)")
    if int(config.log_every) < 1:
        _fail("log_every", config.log_every, "must be >= 1")
    if int(config.steps_per_call) < 1:
        _fail("steps_per_call", config.steps_per_call, "must be >= 1")
    executor = config_get(config, "executor", "auto")
    if executor not in EXECUTORS:
        _fail("executor", executor, f"expected one of {list(EXECUTORS)}")
    if executor == "host_compact" and config.attack.bn_mode != "eval":
        _fail("executor", executor, "host_compact needs config.attack.bn_mode = 'eval' (with "
              f"'{config.attack.bn_mode}' an example's attack depends on its batch); accepted "
              "here: ['auto', 'compiled', 'host']")
    if check_data:
        _check_source(config.data.source, config.data.name, config.data.data_dir)
    return config


def _check_source(source: str, name: str, data_dir: Optional[str]) -> None:
    if source == "tfds":  # fail in a second, before anything is written or downloaded
        from fosc_jax.data.tfds_source import require_prepared
        require_prepared(name, data_dir)
        return
    if source == "bundled":
        return
    if not isinstance(source, str) or not source.startswith("files:"):
        _fail("data.source", source, "expected 'tfds', 'bundled' or 'files:DIR'")
    path = os.path.expanduser(source[len("files:"):])
    if not os.path.exists(path):
        _fail("data.source", source,
              f"the path {path!r} does not exist; point it at a folder holding MNIST IDX files, "
              f"the CIFAR-10 binary release or an .npz (override with "
              f"--config.data.source=files:/path/to/data)")
