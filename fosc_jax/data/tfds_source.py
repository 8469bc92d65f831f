"""The ``tfds`` source: MNIST / CIFAR-10 through tensorflow-datasets.

Reads with ``tfds.data_source`` (array_record files, decoded with numpy, so no TensorFlow is
needed once the data set is prepared); falls back to ``tfds.load(batch_size=-1)``, which
needs TensorFlow. Nothing is ever downloaded during a run (``download=False``):
:func:`require_prepared` looks for the prepared files on disk, without importing tfds, and
says how to prepare them or which local source to use instead. tensorflow_datasets is
imported lazily so the rest of the package does not depend on it.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Optional

import numpy as np

TFDS_NAMES: tuple[str, ...] = ("mnist", "cifar10")
LOCAL_SOURCES_HELP = (  # short: it ends one-line errors (details in docs/usage.md, Data)
    "or use --config.data.source=files:DIR (CIFAR-10 data_batch_1.bin..., MNIST IDX files or "
    "an .npz) or =bundled (an MNIST subset)"
)


class DataNotPrepared(FileNotFoundError):
    """The tfds data set is not on disk; runs never download it."""


def tfds_data_dir(data_dir: Optional[str] = None) -> str:
    """The folder tfds reads: ``data_dir``, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                              or os.path.join("~", "tensorflow_datasets"))


def prepared_versions(name: str, data_dir: Optional[str] = None) -> list[str]:
    """Versions of ``name`` prepared under the tfds data folder (DIR/NAME/VERSION/
    dataset_info.json), found on disk without importing tfds (which would create folders)."""
    root = os.path.join(tfds_data_dir(data_dir), name)
    return sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(glob.escape(root), "*", "dataset_info.json")))


def not_prepared_message(name: str, data_dir: Optional[str] = None) -> str:
    """One line: what is missing, how to prepare it, and the local alternatives."""
    folder = tfds_data_dir(data_dir)
    return (f"tfds source: {name} is not prepared in {folder} (runs never download): prepare "
            f"it once with tfds' download_and_prepare (command in docs/usage.md), "
            f"{LOCAL_SOURCES_HELP}.")


def require_prepared(name: str, data_dir: Optional[str] = None) -> None:
    """Raise :class:`DataNotPrepared` (one line) unless ``name`` is prepared on disk.

    Remote folders (``gs://...``) are left to tfds to check."""
    if "://" in tfds_data_dir(data_dir):
        return
    if not prepared_versions(name, data_dir):
        raise DataNotPrepared(not_prepared_message(name, data_dir))
_HOW_TO_FIX = (
    "Install it with `pip install tensorflow-datasets tensorflow` (TensorFlow is needed to "
    "download and prepare the data set), or use the `files:DIR` source with the original "
    "MNIST IDX / CIFAR-10 binary files or an .npz."
)


def _read_source(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stack every example of a tfds data source into (images, labels) arrays.

    Reads one example at a time: simple, and tfds' mocked data sources (used in tests)
    do not implement batched ``__getitems__``.
    """
    n = len(source)
    if n == 0:
        raise ValueError(f"tfds source: {source!r} is empty.")
    first = source[0]
    images = np.empty((n, *np.shape(first["image"])), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    for i in range(n):
        example = first if i == 0 else source[i]
        images[i] = example["image"]
        labels[i] = example["label"]
    return images, labels


def _load_split(
    tfds: Any, name: str, split: str, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray]:
    try:
        return _read_source(tfds.data_source(name, split=split, data_dir=data_dir,
                                             download=False))
    except Exception as first:  # noqa: BLE001 - any failure: try the TensorFlow path next
        if isinstance(first, ModuleNotFoundError) and "importlib_resources" in str(first):
            raise _missing_importlib_resources(first) from first
        if "://" not in tfds_data_dir(data_dir) and not prepared_versions(name, data_dir):
            raise DataNotPrepared(not_prepared_message(name, data_dir)) from first
        try:
            data = tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir, batch_size=-1,
                                           download=False))
        except ModuleNotFoundError as e:
            if "tensorflow" in str(e) and "tensorflow_datasets" not in str(e):
                raise RuntimeError(
                    f"tfds source: cannot read {name!r}/{split} without TensorFlow "
                    f"(tfds.data_source failed with: {type(first).__name__}: {first}). "
                    f"{_HOW_TO_FIX}"
                ) from first
            raise
        return np.asarray(data["image"]), np.asarray(data["label"])


def load_tfds(
    name: str, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train uint8 NHWC, y_train int32, x_test, y_test) of tfds data set ``name``."""
    if name not in TFDS_NAMES:
        raise ValueError(f"tfds source: name must be one of {TFDS_NAMES}, got {name!r}.")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"tfds source: tensorflow_datasets is not installed. {_HOW_TO_FIX}"
        ) from e
    x_train, y_train = _load_split(tfds, name, "train", data_dir)
    x_test, y_test = _load_split(tfds, name, "test", data_dir)
    return (x_train.astype(np.uint8), y_train.astype(np.int32),
            x_test.astype(np.uint8), y_test.astype(np.int32))


def _missing_importlib_resources(err: Exception) -> ImportError:
    return ImportError(
        f"tfds source: tensorflow_datasets needs importlib_resources ({err}); install it with "
        f"`pip install importlib_resources`, {LOCAL_SOURCES_HELP}.")
