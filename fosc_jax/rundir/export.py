"""A trained model out of a run: :func:`load_classifier` reads it (from a run's newest
checkpoint or an exported folder, writing nothing), :func:`export_classifier` writes the
inference variables and config to a folder of plain files.

An export is complete once ``variables.npz`` exists: config.json and model.json are written
(atomically) before it, so an interrupted export has no variables.npz, or lacks one of the
other files if an older version wrote it (:func:`export_complete` checks all three)."""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Optional

import flax.core
import flax.traverse_util
import ml_collections
import numpy as np

from fosc_jax.errors import CheckpointError, RunFileError
from fosc_jax.rundir import checkpoints, integrity
from fosc_jax.rundir.config_file import CONFIG_FILE, load_config, portable_config

EXPORT_FILE = "variables.npz"
EXPORT_META = "model.json"


def export_classifier(workdir: str, out_dir: str, step: Optional[int] = None) -> str:
    """Write a run's final model (inference variables + config, no optimizer state) to
    ``out_dir`` as ``variables.npz`` (plain arrays, read back with allow_pickle=False),
    ``config.json`` (portable: no data folder) and ``model.json``, variables.npz last, so
    its presence marks a finished export; :func:`load_classifier` reads the folder back."""
    clf = load_classifier(workdir, step)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(clf.variables), sep="/")
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, EXPORT_FILE)):  # unfinished until the new one lands
        os.remove(os.path.join(out_dir, EXPORT_FILE))
    integrity.atomic_write_text(os.path.join(out_dir, CONFIG_FILE),
                                portable_config(clf.config).to_json(indent=2))
    integrity.atomic_write_text(os.path.join(out_dir, EXPORT_META),
                  json.dumps({"epoch": int(clf.epoch),
                              "source_run": os.path.relpath(workdir, out_dir)},
                             indent=2))
    integrity.atomic_write(os.path.join(out_dir, EXPORT_FILE), lambda f: np.savez(
        f, **{k: np.asarray(v) for k, v in flat.items()}), binary=True)
    return out_dir


def export_complete(folder: str) -> bool:
    """Whether ``folder`` holds a finished export (variables.npz, config.json, model.json)."""
    return all(os.path.isfile(os.path.join(folder, f))
               for f in (EXPORT_FILE, CONFIG_FILE, EXPORT_META))


def _model_for(config: ml_collections.ConfigDict):
    """The config's model (its compute dtype) and the shape of one input."""
    from fosc_jax.data import KNOWN_DATASETS
    from fosc_jax.models import get_model
    num_classes, shape = KNOWN_DATASETS[config.data.name]
    return get_model(config.model.name, num_classes=num_classes,
                     dtype=config.get("model", {}).get("dtype", "float32")), shape


def _classifier(config: ml_collections.ConfigDict, variables: dict, epoch: int, where: str):
    """A Classifier of ``variables``, checked against the config's model (shapes)."""
    import jax
    import jax.numpy as jnp
    from fosc_jax.classifier import Classifier

    model, shape = _model_for(config)
    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1,) + tuple(shape)), train=False))
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), dict(expected))
    got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), dict(variables))
    if want != got:
        raise CheckpointError(f"{where} does not hold a {config.model.name!r} for "
                              f"{config.data.name!r} as its config.json says (the variables' "
                              "names or shapes differ).")
    return Classifier(model=model, variables=variables, config=config, epoch=int(epoch))


def _load_exported(path: str):
    if not export_complete(path):
        raise RunFileError(f"{path} holds an unfinished export (it needs {EXPORT_FILE}, "
                           f"{CONFIG_FILE} and {EXPORT_META}); export the run again.")
    config = load_config(path)
    file = os.path.join(path, EXPORT_FILE)
    try:  # never unpickle: an object array (a pickle) is refused like a damaged file
        with np.load(file, allow_pickle=False) as data:
            variables = flax.traverse_util.unflatten_dict({k: data[k] for k in data.files},
                                                          sep="/")
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise RunFileError(f"{file} is damaged or not plain arrays ({detail}); export the "
                           "run again.") from err
    try:
        with open(os.path.join(path, EXPORT_META)) as f:
            epoch = int(json.load(f)["epoch"])
    except (ValueError, KeyError, TypeError) as err:
        raise RunFileError(f"{os.path.join(path, EXPORT_META)} is garbled ({err}); export "
                           "the run again.") from err
    return _classifier(config, variables, epoch, path)


def _whole_tree_target(folder: str) -> Any:
    """A restore target for everything a step folder holds, shapes and dtypes from its
    metadata, placed on one device: reading a model needs no optimizer, mesh or jit."""
    import jax

    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
        checkpoints.saved_tree(folder))


def load_classifier(workdir: str, step: Optional[int] = None):
    """The model of a run in ``workdir`` at its latest checkpoint (or the one saved at
    global training ``step``), or of a folder written by :func:`export_classifier`.

    Only the model is read (parameters and BatchNorm statistics; no optimizer, mesh or
    jit). Returns a :class:`~fosc_jax.classifier.Classifier` with ``.logits(x)`` (pure,
    jit-able, inputs NHWC in [0, 1]), ``.apply(variables, x)``, ``.variables``, ``.config``.
    """
    if os.path.exists(os.path.join(workdir, EXPORT_FILE)):
        if step is not None:
            raise ValueError(f"{workdir} holds one exported model; it has no steps to choose.")
        return _load_exported(workdir)
    config = load_config(workdir)
    folder = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
    missing = FileNotFoundError(f"no checkpoint in {folder}; train first (python train.py "
                                "--workdir ...).")
    if not os.path.isdir(folder):
        raise missing
    manager = checkpoints.make_manager(workdir, config, read_only=True)
    try:
        steps = manager.all_steps()
        if not steps:
            raise missing
        if step is not None and step not in steps:
            raise ValueError(f"no checkpoint at step {step} in {workdir}; have "
                             f"{sorted(steps)}.")
        if step is not None:  # the step asked for, or CheckpointError: no silent substitute
            state = checkpoints.restore(manager, step, _whole_tree_target)
        else:
            state, _ = checkpoints.restore_newest_good(manager, _whole_tree_target)
            if state is None:
                raise FileNotFoundError(f"no checkpoint in {manager.directory} holds a model; "
                                        "train first (python train.py --workdir ...).")
    finally:
        manager.close()
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return _classifier(config, variables, int(state["epoch"]), workdir)
