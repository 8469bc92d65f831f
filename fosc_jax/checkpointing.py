"""Run directory I/O: Orbax checkpoints, the saved config, metrics.jsonl, FOSC samples.

Checkpoints are written by Orbax's CheckpointManager, which finalises each step atomically
(written to a temporary folder, then renamed), so a preempted run never leaves a half-written
latest checkpoint. Each checkpoint also records a SHA-256 of its content (Orbax custom
metadata, written in the same atomic step) and one of every file in it (FILES_MANIFEST,
written right after); restore checks both, and
:func:`restore_newest_good` falls back past corrupt, truncated or empty step folders to the
newest checkpoint that verifies. metrics.jsonl, config.json and the FOSC samples are rewritten
through a temporary file and ``os.replace`` for the same reason, with the user's umask.
Only process 0 writes these files in a multi-process run; Orbax saves are collective.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Callable, Optional

import flax.core
import flax.serialization
import flax.traverse_util
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fosc_jax import integrity, legacy
from fosc_jax.errors import ConfigError
from fosc_jax.errors import CheckpointError, RunFileError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
DATA_FILE = "data_sizes.json"        # split sizes the run was started with
FILES_MANIFEST = "fosc_jax_files.json"  # in each step folder: SHA-256 of every file in it
CORRUPT_DIR = "corrupt_checkpoints"  # where training moves checkpoints that fail to verify
# Fields a resumed run may change without invalidating the checkpoint.
RESUMABLE_FIELDS = ("num_epochs", "stop_after_epochs", "quiet", "log_every", "checkpoint_every",
                    "checkpoint_keep", "eval", "data.source", "data.data_dir")

# Fields added to the config later: the value a config.json without them ran with.
LEGACY_DEFAULTS = {"data.subset": "first"}


def _atomic_write(path: str, text: str) -> None:
    integrity.atomic_write_text(path, text)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


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


def _read_json_object(path: str) -> dict:
    """A JSON object from ``path``; RunFileError (one line, naming the file) if garbled."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path} is not valid JSON ({err}); restore it from a backup, or "
                           "start afresh in a new --workdir.") from err
    if not isinstance(value, dict):
        raise RunFileError(f"{path} holds a JSON {type(value).__name__}, expected an object "
                           "of config fields; restore it, or use a new --workdir.")
    return value


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was started with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {workdir!r} is not a fosc_jax run directory "
                                "(train.py writes config.json there).")
    return ml_collections.ConfigDict(_read_json_object(path))


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a run that was started with a different config (reads only)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        old = _flatten(_read_json_object(path))
        new = _flatten(json.loads(config.to_json(sort_keys=True)))
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


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Save the config (train_and_evaluate calls this only once the run can start)."""
    _atomic_write(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2, sort_keys=True))


def check_or_write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Save the config, or refuse to resume a run that was started with a different one."""
    check_config(workdir, config)
    write_config(workdir, config)


def check_data_sizes(workdir: str, config: ml_collections.ConfigDict,
                     sizes: dict[str, int]) -> None:
    """Refuse a resume whose data has other split sizes than the run was started with (a
    changed ``data.source`` may only point at the same data elsewhere)."""
    path = os.path.join(workdir, DATA_FILE)
    if os.path.exists(path):
        old = _read_json_object(path)
        differ = {k: (old.get(k), v) for k, v in sizes.items() if old.get(k) != v}
        if differ:
            detail = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in sorted(differ.items()))
            raise ConfigError(
                f"config.data.source = {config.data.source!r} gives other split sizes than "
                f"{workdir} was started with ({detail}; source was {old.get('source')!r}); "
                "resume with the original data, or train in a new --workdir.")
        return
    cfg_path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(cfg_path):  # a run from before split sizes were stored
        old_source = _read_json_object(cfg_path).get("data", {}).get("source")
        if old_source != config.data.source:
            raise ConfigError(
                f"config.data.source = {config.data.source!r} differs from the "
                f"{old_source!r} {workdir} was started with, and the run stored no split "
                "sizes to check it against; resume with the original source.")


def write_data_sizes(workdir: str, config: ml_collections.ConfigDict,
                     sizes: dict[str, int]) -> None:
    _atomic_write(os.path.join(workdir, DATA_FILE),
                  json.dumps({**sizes, "source": config.data.source}, indent=2, sort_keys=True))


def make_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=int(config.checkpoint_keep), create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Save ``state`` as checkpoint ``step`` (the global training step; no-op if saved),
    with the SHA-256 of its content in the step's metadata. Collective in multi-process."""
    if step in manager.all_steps():
        return
    import jax
    from jax.experimental import multihost_utils

    tree = flax.serialization.to_state_dict(state)
    manager.save(step, args=ocp.args.StandardSave(tree),
                 custom_metadata={integrity.DIGEST_KEY: integrity.tree_digest(tree)})
    manager.wait_until_finished()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"fosc_jax:saved:{step}")
    if jax.process_index() == 0:
        _write_file_manifest(_step_dir(manager, step))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"fosc_jax:manifest:{step}")


def _step_files(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, f), folder)
                  for root, _, files in os.walk(folder) for f in files
                  if f != FILES_MANIFEST and not f.startswith(".tmp_"))


def _write_file_manifest(folder: str) -> None:
    """Record the SHA-256 of every file of a finished checkpoint: any flipped byte, also in
    bytes the content checksum never reads (metadata, unused tails), is then caught."""
    digests = {rel: integrity.file_digest(os.path.join(folder, rel))
               for rel in _step_files(folder)}
    _atomic_write(os.path.join(folder, FILES_MANIFEST), json.dumps(digests, indent=1))


def _check_file_manifest(folder: str) -> None:
    """Raise _Unusable if a file recorded in the step's manifest is missing or altered (a
    checkpoint saved without a manifest, e.g. killed in between, is checked by content)."""
    path = os.path.join(folder, FILES_MANIFEST)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            digests = json.load(f)
        assert isinstance(digests, dict)
    except (ValueError, AssertionError, UnicodeDecodeError):
        raise _Unusable(f"its file manifest {FILES_MANIFEST} is garbled") from None
    for rel, digest in sorted(digests.items()):
        full = os.path.join(folder, rel)
        if not os.path.exists(full):
            raise _Unusable(f"the file {rel} is missing")
        if integrity.file_digest(full) != digest:
            raise _Unusable(f"the file {rel} differs from its recorded SHA-256 (altered or "
                            "damaged)")


@contextlib.contextmanager
def _quiet_absl():
    from absl import logging as absl_logging
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


class _Unusable(Exception):
    """A checkpoint step that cannot be used; ``empty`` when the folder holds no checkpoint."""

    def __init__(self, message: str, empty: bool = False):
        super().__init__(message)
        self.empty = empty


def _step_dir(manager: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(str(manager.directory), str(step))


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
    """Checkpoint ``step`` restored into ``abstract_state``'s structure and shardings (or
    into the target ``abstract_state(step_folder)`` returns), its content checksum
    verified; CheckpointError (naming the folder) if it does not verify."""
    try:
        return _restore_verified(manager, step, abstract_state)
    except _Unusable as err:
        raise CheckpointError(f"checkpoint {_step_dir(manager, step)} is unusable: "
                              f"{err}.") from None


def _restore_verified(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
    folder = _step_dir(manager, step)
    if not os.path.isdir(os.path.join(folder, "default")):
        raise _Unusable("the step folder is empty or incomplete (no 'default' item)",
                        empty=not os.path.isdir(folder) or not os.listdir(folder))
    _check_file_manifest(folder)
    try:
        with _quiet_absl():  # Orbax logs a warning about the item it is not asked to read
            expected = (manager.metadata(step).custom_metadata or {}).get(integrity.DIGEST_KEY)
    except Exception as err:  # noqa: BLE001 - any unreadable metadata makes the step unusable
        raise _Unusable(f"its metadata is unreadable ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None
    if callable(abstract_state):  # a target read from the folder itself
        abstract_state = abstract_state(folder)
    target = flax.serialization.to_state_dict(abstract_state)
    upgrade = None
    try:
        restored = _read(manager, step, target)
    except _Unusable:  # a state saved by an older layout is read in that layout
        old = legacy.checkpoint_target(target, _saved_keys(folder))
        if old is None:
            raise
        target, upgrade = old
        restored = _read(manager, step, target)
    if expected is None:
        _warn(f"checkpoint {folder} has no content checksum (written before fosc_jax recorded "
              "them); restored unverified.")
    else:
        found = integrity.tree_digest(restored)
        if found != expected:
            raise _Unusable(f"its content checksum does not match (stored {expected[:12]}..., "
                            f"found {found[:12]}...): a file in it was altered or damaged")
    if upgrade is not None:
        restored = upgrade(restored)
    return flax.serialization.from_state_dict(abstract_state, restored)


def _saved_tree(folder: str) -> Any:
    """The tree of array metadata (shapes, dtypes) of the state saved in a step folder;
    _Unusable if Orbax cannot read it."""
    from etils import epath
    try:
        with _quiet_absl():
            meta = ocp.StandardCheckpointHandler().metadata(
                epath.Path(os.path.abspath(os.path.join(folder, "default"))))
    except Exception as err:  # noqa: BLE001 - unreadable metadata makes the step unusable
        raise _Unusable(f"its tree metadata is unreadable ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None
    return getattr(meta, "tree", meta)


def _saved_keys(folder: str) -> list[str]:
    """Top-level keys of the state saved in a step folder ([] if they cannot be read)."""
    try:
        tree = _saved_tree(folder)
    except _Unusable:  # no layout to recognise
        return []
    return list(tree) if isinstance(tree, dict) else []


def _read(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as err:  # noqa: BLE001 - TensorStore/OCDBT/JSON errors of a damaged file
        raise _Unusable(f"it cannot be read ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None


def restore_newest_good(manager: ocp.CheckpointManager, abstract_state: Any, *,
                        quarantine: Optional[str] = None,
                        say: Callable[[str], None] = _warn) -> tuple[Optional[Any], Optional[int]]:
    """(state, step) of the newest checkpoint that verifies, or (None, None) if there is none.

    Newer steps that fail (checksum mismatch, unreadable file, empty or incomplete folder) are
    reported through ``say`` and skipped. With ``quarantine`` (a folder; training passes
    WORKDIR/corrupt_checkpoints) they are moved there, on process 0, so the resumed run can
    save those steps again. If steps exist but every one holding data is corrupt,
    CheckpointError: starting afresh would silently discard the run.
    """
    import jax
    from jax.experimental import multihost_utils

    bad: list[tuple[int, _Unusable]] = []
    state, good = None, None
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state, good = _restore_verified(manager, step, abstract_state), step
            break
        except _Unusable as err:
            bad.append((step, err))
            say(f"checkpoint {_step_dir(manager, step)} is unusable: {err}; "
                + ("skipping it." if err.empty else "falling back to the previous one."))
    if bad and quarantine is not None:
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("fosc_jax:quarantine")  # all have decided
        if jax.process_index() == 0:
            os.makedirs(quarantine, exist_ok=True)
            for step, _ in bad:
                dest = os.path.join(quarantine, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(_step_dir(manager, step), dest)
                say(f"moved checkpoint step {step} to {dest}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("fosc_jax:quarantined")
        manager.reload()
    if good is None and any(not err.empty for _, err in bad):
        detail = "; ".join(f"step {s}: {e}" for s, e in bad)
        raise CheckpointError(
            f"no usable checkpoint in {manager.directory} ({detail}); restore the folder from "
            "a backup, or move it aside to start the run afresh.")
    if good is not None and bad:
        say(f"using checkpoint step {good}, the newest that verifies.")
    return state, good


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> Optional[Any]:
    """The newest checkpoint that verifies, restored into ``abstract_state``, or None."""
    return restore_newest_good(manager, abstract_state)[0]


def truncate_metrics(workdir: str, epoch: int) -> None:
    """Drop metric lines of epochs >= ``epoch`` (written after the resumed checkpoint); a
    partial last line (a crash mid-write, no newline) is dropped with a warning."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        text = f.read()
    if text and not text.endswith("\n"):
        head, _, tail = text.rpartition("\n")
        try:
            json.loads(tail)
            text += "\n"
        except json.JSONDecodeError:
            _warn(f"{path}: dropped a partial last line ({len(tail)} bytes, a crash "
                  "mid-write).")
            text = head + "\n" if head else ""
    rows = [json.dumps(row, sort_keys=True) + "\n" for row in _parse_metrics(path, text)
            if row["epoch"] < epoch]
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
    with open(path, encoding="utf-8", errors="replace") as f:
        return _parse_metrics(path, f.read())


def _parse_metrics(path: str, text: str) -> list[dict]:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RunFileError(f"{path}:{i}: not JSON ({err}); expected one JSON object per "
                               "line as train.py writes them.") from err
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise RunFileError(f"{path}:{i}: the row has no integer 'epoch' key; expected one "
                               "JSON object per line as train.py writes them.")
        rows.append(row)
    return rows


def save_fosc_sample(workdir: str, epoch: int, fosc: np.ndarray, loss: np.ndarray,
                     num_steps: np.ndarray, size: int, seed: int) -> None:
    """A seeded sample (at most ``size``) of the epoch's per-example FOSC, loss and steps."""
    folder = os.path.join(workdir, "fosc")
    os.makedirs(folder, exist_ok=True)
    idx = np.random.default_rng(seed + epoch).permutation(len(fosc))[:size]
    path = os.path.join(folder, f"epoch_{epoch:04d}.npz")
    integrity.atomic_write(path, lambda f: np.savez(
        f, fosc=fosc[idx].astype(np.float32), loss=loss[idx].astype(np.float32),
        num_steps=num_steps[idx].astype(np.int32)), binary=True)


EXPORT_FILE = "variables.npz"
EXPORT_META = "model.json"


def export_classifier(workdir: str, out_dir: str, step: Optional[int] = None) -> str:
    """Write a run's final model (inference variables + config, no optimizer state) to
    ``out_dir`` as ``variables.npz`` (plain arrays, read back with allow_pickle=False),
    ``config.json`` and ``model.json``; :func:`load_classifier` reads the folder back."""
    clf = load_classifier(workdir, step)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(clf.variables), sep="/")
    os.makedirs(out_dir, exist_ok=True)
    integrity.atomic_write(os.path.join(out_dir, EXPORT_FILE), lambda f: np.savez(
        f, **{k: np.asarray(v) for k, v in flat.items()}), binary=True)
    _atomic_write(os.path.join(out_dir, CONFIG_FILE), clf.config.to_json(indent=2))
    _atomic_write(os.path.join(out_dir, EXPORT_META),
                  json.dumps({"epoch": int(clf.epoch),
                              "source_run": os.path.relpath(workdir, out_dir)},
                             indent=2))
    return out_dir


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
    config = load_config(path)
    with np.load(os.path.join(path, EXPORT_FILE), allow_pickle=False) as data:
        variables = flax.traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="/")
    with open(os.path.join(path, EXPORT_META)) as f:
        epoch = int(json.load(f)["epoch"])
    return _classifier(config, variables, epoch, path)


def _whole_tree_target(folder: str) -> Any:
    """A restore target for everything a step folder holds, shapes and dtypes from its
    metadata, placed on one device: reading a model needs no optimizer, mesh or jit."""
    import jax

    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
        _saved_tree(folder))


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
    manager = make_manager(workdir, config)
    try:
        steps = manager.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; "
                                    "train first (python train.py --workdir ...).")
        if step is not None and step not in steps:
            raise ValueError(f"no checkpoint at step {step} in {workdir}; have "
                             f"{sorted(steps)}.")
        if step is not None:  # the step asked for, or CheckpointError: no silent substitute
            state = restore(manager, step, _whole_tree_target)
        else:
            state, _ = restore_newest_good(manager, _whole_tree_target)
            if state is None:
                raise FileNotFoundError(f"no checkpoint in {manager.directory} holds a model; "
                                        "train first (python train.py --workdir ...).")
    finally:
        manager.close()
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return _classifier(config, variables, int(state["epoch"]), workdir)
