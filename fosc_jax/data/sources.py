"""``load_dataset``: one entry point for every data source (tfds, files:DIR, bundled)."""

from __future__ import annotations

import os

import numpy as np

from fosc_jax.data.bundled import load_bundled
from fosc_jax.data.dataset import Dataset
from fosc_jax.data.local_files import load_files
from fosc_jax.data.tfds_source import load_tfds

# Known data sets: number of classes and image shape (H, W, C) every source must produce.
KNOWN_DATASETS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "mnist": (10, (28, 28, 1)),
    "cifar10": (10, (32, 32, 3)),
}
SOURCES_HELP = '"tfds", "files:DIR" (or "files" with data_dir=DIR), "bundled"'


def _make_dataset(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, origin: str) -> Dataset:
    """Check the arrays against what ``name`` promises and wrap them in a Dataset."""
    if name in KNOWN_DATASETS:
        num_classes, shape = KNOWN_DATASETS[name]
        if tuple(x_train.shape[1:]) != shape:
            raise ValueError(f"{origin}: images have shape {tuple(x_train.shape[1:])} but "
                             f"name={name!r} expects {shape}; check the name or the path.")
    else:
        num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return Dataset(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   num_classes=num_classes)


def load_dataset(source: str, name: str, *, data_dir: str | None = None) -> Dataset:
    """Load train/test splits of ``name`` from ``source`` as host uint8/int32 arrays.

    source: "tfds" (tensorflow-datasets; ``data_dir`` is its data folder), "files:DIR"
    (MNIST IDX, CIFAR-10 binary or .npz files under DIR; ``"files"`` plus ``data_dir=DIR``
    is the same), or "bundled" (the small MNIST subset shipped in the package).
    name: "mnist" or "cifar10" (checked against the images' shape); files:DIR also accepts
    any other name, with num_classes = largest label + 1.
    """
    if not isinstance(source, str):
        raise ValueError(f"load_dataset: source must be a string ({SOURCES_HELP}), got {source!r}.")
    if not isinstance(name, str) or not name:
        raise ValueError(f"load_dataset: name must be a non-empty string, got {name!r}.")
    if source == "tfds":
        return _make_dataset(name, *load_tfds(name, data_dir), origin=f"tfds {name!r}")
    if source == "files" or source.startswith("files:"):
        path = source[len("files:"):] if source.startswith("files:") else None
        if path is not None and data_dir is not None:
            raise ValueError(f"load_dataset: give the directory once, either in source "
                             f"({source!r}) or as data_dir ({data_dir!r}).")
        path = path if path is not None else data_dir
        if not path:
            raise ValueError('load_dataset: the files source needs a directory: "files:DIR" '
                             'or source="files" with data_dir=DIR.')
        raw = load_files(path)
        return _make_dataset(name, raw.x_train, raw.y_train, raw.x_test, raw.y_test,
                             origin=f"files:{path} ({raw.fmt})")
    if source == "bundled":
        if data_dir is not None:
            raise ValueError("load_dataset: data_dir is not used by the bundled source; drop it.")
        raw = load_bundled(name)
        return _make_dataset(name, raw.x_train, raw.y_train, raw.x_test, raw.y_test,
                             origin="bundled")
    raise ValueError(f"load_dataset: unknown source {source!r}; accepted: {SOURCES_HELP}.")


# ------------------------------------------------------------ where the data is, per machine
# Run files record "files" (or "tfds") without the folder, so a run or an exported model
# works on another machine: the folder comes from the user (a flag) or from this variable.
DATA_DIR_ENV: dict[str, str] = {"mnist": "FOSC_JAX_MNIST_DIR", "cifar10": "FOSC_JAX_CIFAR10_DIR"}


def data_dir_env(name: str) -> str:
    """The environment variable that gives the folder of data set ``name``."""
    safe = "".join(c if c.isalnum() else "_" for c in name).upper()
    return DATA_DIR_ENV.get(name, f"FOSC_JAX_{safe}_DIR")


def portable_source(source: str, data_dir: str | None) -> tuple[str, None]:
    """(source, data_dir) as a run file records them: without the machine's folder
    ("files:DIR" -> "files"; a tfds data_dir is dropped)."""
    if isinstance(source, str) and source.startswith("files:"):
        source = "files"
    return source, None


def resolve_source(source: str, name: str, data_dir: str | None = None,
                   data: str | None = None) -> tuple[str, str | None]:
    """(source, data_dir) to load ``name`` from on this machine.

    ``data`` (a user's choice, e.g. evaluate.py --data) wins: "bundled", "tfds",
    "files:DIR" or a plain DIR. Else a recorded "files" source without a folder takes it from
    ``$FOSC_JAX_<NAME>_DIR``; without either, ValueError says what to pass.
    """
    if data:
        data = str(data)
        if data in ("bundled", "tfds") or data.startswith("files:"):
            return data, None
        return f"files:{data}", None
    if source == "files" and not data_dir:
        env = data_dir_env(name)
        if os.environ.get(env):
            return f"files:{os.environ[env]}", None
        raise ValueError(f"the {name} data was read from local files whose folder is not "
                         f"recorded (data.source = 'files'); say where it is: --data DIR "
                         f"(evaluate_workdirs(data=DIR)) or set {env}=DIR.")
    return source, data_dir
