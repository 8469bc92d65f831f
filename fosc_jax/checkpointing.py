"""Run directory I/O: Orbax checkpoints, the saved config, metrics.jsonl, FOSC samples.

Checkpoints are written by Orbax's CheckpointManager, which finalises each step atomically
(written to a temporary folder, then renamed), so a preempted run never leaves a half-written
latest checkpoint. metrics.jsonl and the FOSC samples are rewritten through a temporary file
and ``os.replace`` for the same reason.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional

import flax.core
import flax.serialization
import flax.traverse_util
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fosc_jax.config import ConfigError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# Fields a resumed run may change without invalidating the checkpoint.
RESUMABLE_FIELDS = ("num_epochs", "stop_after_epochs", "quiet", "log_every", "checkpoint_every",
                    "checkpoint_keep", "eval", "data.source", "data.data_dir")

# Fields added to the config later: the value a config.json without them ran with.
LEGACY_DEFAULTS = {"data.subset": "first"}


def _atomic_write(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


def config_from_json(text: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads(text))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was started with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {workdir!r} is not a fosc_jax run directory "
                                "(train.py writes config.json there).")
    with open(path) as f:
        return config_from_json(f.read())


def check_or_write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Save the config, or refuse to resume a run that was started with a different one."""
    path = os.path.join(workdir, CONFIG_FILE)
    text = config.to_json(indent=2, sort_keys=True)
    if os.path.exists(path):
        old = _flatten(json.loads(open(path).read()))
        new = _flatten(json.loads(text))
        for field, value in LEGACY_DEFAULTS.items():  # fields added after the run started
            old.setdefault(field, value)
        if not old.get("data.train_limit") and not new.get("data.train_limit"):
            old.pop("data.subset", None), new.pop("data.subset", None)  # no subset taken
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                        and not any(k == f or k.startswith(f + ".") for f in RESUMABLE_FIELDS))
        if differ:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ)
            raise ConfigError(f"{workdir} holds a run started with a different config ({detail}); "
                             "use a new --workdir, or the original settings to resume.")
    _atomic_write(path, text)


def make_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=int(config.checkpoint_keep), create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Save ``state`` as checkpoint ``step`` (the global training step; no-op if saved)."""
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)))
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
    """Checkpoint ``step`` restored into ``abstract_state``'s structure and shardings."""
    target = flax.serialization.to_state_dict(abstract_state)
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return flax.serialization.from_state_dict(abstract_state, restored)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> Optional[Any]:
    """The latest checkpoint restored into ``abstract_state``'s structure, or None."""
    step = manager.latest_step()
    return None if step is None else restore(manager, step, abstract_state)


def truncate_metrics(workdir: str, epoch: int) -> None:
    """Drop metric lines of epochs >= ``epoch`` (written after the resumed checkpoint)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["epoch"] < epoch]
    _atomic_write(path, "".join(rows))


def append_metrics(workdir: str, row: dict) -> None:
    """Append one epoch's JSON line (rewritten atomically with the earlier lines)."""
    path = os.path.join(workdir, METRICS_FILE)
    old = open(path).read() if os.path.exists(path) else ""
    _atomic_write(path, old + json.dumps(row, sort_keys=True) + "\n")


def read_metrics(workdir: str) -> list[dict]:
    """Rows of WORKDIR/metrics.jsonl ([] if absent); a bad line raises ValueError naming it."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not JSON ({err}).") from err
            if "epoch" not in row:
                raise ValueError(f"{path}:{i}: the row has no 'epoch' key.")
            rows.append(row)
    return rows


def save_fosc_sample(workdir: str, epoch: int, fosc: np.ndarray, loss: np.ndarray,
                     num_steps: np.ndarray, size: int, seed: int) -> None:
    """A seeded sample (at most ``size``) of the epoch's per-example FOSC, loss and steps."""
    folder = os.path.join(workdir, "fosc")
    os.makedirs(folder, exist_ok=True)
    idx = np.random.default_rng(seed + epoch).permutation(len(fosc))[:size]
    path = os.path.join(folder, f"epoch_{epoch:04d}.npz")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, fosc=fosc[idx].astype(np.float32), loss=loss[idx].astype(np.float32),
                 num_steps=num_steps[idx].astype(np.int32))
    os.replace(tmp, path)


EXPORT_FILE = "variables.npz"
EXPORT_META = "model.json"


def export_classifier(workdir: str, out_dir: str, step: Optional[int] = None) -> str:
    """Write a run's final model (inference variables + config, no optimizer state) to
    ``out_dir`` as ``variables.npz`` (plain arrays, read back with allow_pickle=False),
    ``config.json`` and ``model.json``; :func:`load_classifier` reads the folder back."""
    clf = load_classifier(workdir, step)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(clf.variables), sep="/")
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp_", suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in flat.items()})
    os.replace(tmp, os.path.join(out_dir, EXPORT_FILE))
    _atomic_write(os.path.join(out_dir, CONFIG_FILE), clf.config.to_json(indent=2))
    _atomic_write(os.path.join(out_dir, EXPORT_META),
                  json.dumps({"epoch": int(clf.epoch),
                              "source_run": os.path.relpath(workdir, out_dir)},
                             indent=2))
    return out_dir


def _load_exported(path: str):
    from fosc_jax.classifier import Classifier
    from fosc_jax.models import get_model

    config = load_config(path)
    with np.load(os.path.join(path, EXPORT_FILE), allow_pickle=False) as data:
        variables = flax.traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="/")
    with open(os.path.join(path, EXPORT_META)) as f:
        epoch = int(json.load(f)["epoch"])
    from fosc_jax.data import KNOWN_DATASETS
    num_classes, _ = KNOWN_DATASETS[config.data.name]
    model = get_model(config.model.name, num_classes=num_classes)
    return Classifier(model=model, variables=variables, config=config, epoch=epoch)


def load_classifier(workdir: str, step: Optional[int] = None):
    """The model of a run in ``workdir`` at its latest checkpoint (or the one saved at
    global training ``step``), or of a folder written by :func:`export_classifier`.

    Returns a :class:`~fosc_jax.classifier.Classifier` with ``.logits(x)`` (pure, jit-able,
    inputs NHWC in [0, 1]), ``.apply(variables, x)``, ``.variables`` and ``.config``.
    """
    from fosc_jax.data import KNOWN_DATASETS
    from fosc_jax.training import Trainer

    if os.path.exists(os.path.join(workdir, EXPORT_FILE)):
        if step is not None:
            raise ValueError(f"{workdir} holds one exported model; it has no steps to choose.")
        return _load_exported(workdir)
    config = load_config(workdir)
    manager = make_manager(workdir, config)
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; "
                                "train first (python train.py --workdir ...).")
    step = max(steps) if step is None else step
    if step not in steps:
        raise ValueError(f"no checkpoint at step {step} in {workdir}; have {sorted(steps)}.")
    num_classes, shape = KNOWN_DATASETS[config.data.name]
    trainer = Trainer(config, shape, num_classes)
    state = restore(manager, step, trainer.abstract_state())
    manager.close()
    return trainer.classifier(state)
