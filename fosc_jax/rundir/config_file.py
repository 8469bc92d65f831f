"""A run's config.json and data_sizes.json: what a resume is checked against.

A resumed run must have been started with the same config (except
:data:`RESUMABLE_FIELDS`) and the same split sizes; the checks only read, and training
writes the files once the run is known to be able to start.
"""
from __future__ import annotations

import json
import os

import ml_collections

from fosc_jax.data.sources import portable_source
from fosc_jax.errors import ConfigError, RunFileError
from fosc_jax.rundir import integrity

CONFIG_FILE = "config.json"
DATA_FILE = "data_sizes.json"        # split sizes the run was started with
# Fields a resumed run may change without invalidating the checkpoint. ``executor`` picks how
# steps run, not what they compute ("auto" already differs between a CPU and a GPU), and runs
# started before the field existed have none in config.json.
RESUMABLE_FIELDS = ("num_epochs", "stop_after_epochs", "quiet", "log_every", "checkpoint_every",
                    "checkpoint_keep", "eval", "data.source", "data.data_dir", "executor")


def portable_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` as run files record it: no folder of this machine in
    ``data.source`` / ``data.data_dir`` ("files:DIR" -> "files"), so a run or an exported
    model moves to another machine; the folder then comes from the user (resolve_source)."""
    out = ml_collections.ConfigDict(json.loads(config.to_json()))
    if "data" in out and "source" in out.data:
        source, data_dir = portable_source(out.data.source, out.data.get("data_dir"))
        out.data.source = source
        if "data_dir" in out.data:
            out.data.data_dir = data_dir
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


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
        new = _flatten(json.loads(portable_config(config).to_json(sort_keys=True)))
        if not old.get("data.train_limit") and not new.get("data.train_limit"):
            old.pop("data.subset", None), new.pop("data.subset", None)  # no subset taken
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                        and not any(k == f or k.startswith(f + ".") for f in RESUMABLE_FIELDS))
        if differ:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ)
            raise ConfigError(f"{workdir} holds a run started with a different config ({detail}); "
                             "use a new --workdir, or the original settings to resume.")


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Save the config, portable (train_and_evaluate calls this only once the run can
    start; the config in memory keeps its data folder)."""
    integrity.atomic_write_text(os.path.join(workdir, CONFIG_FILE),
                                portable_config(config).to_json(indent=2, sort_keys=True))


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
        if old_source not in (config.data.source, portable_config(config).data.source):
            raise ConfigError(
                f"config.data.source = {config.data.source!r} differs from the "
                f"{old_source!r} {workdir} was started with, and the run stored no split "
                "sizes to check it against; resume with the original source.")


def write_data_sizes(workdir: str, config: ml_collections.ConfigDict,
                     sizes: dict[str, int]) -> None:
    integrity.atomic_write_text(os.path.join(workdir, DATA_FILE),
                  json.dumps({**sizes, "source": portable_config(config).data.source},
                             indent=2, sort_keys=True))
