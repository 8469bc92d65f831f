"""The ``tfds`` source: MNIST / CIFAR-10 through tensorflow-datasets.

Reads with ``tfds.data_source`` (array_record files, decoded with numpy, so no TensorFlow is
needed once the data set is prepared); falls back to ``tfds.load(batch_size=-1)``, which
needs TensorFlow. tensorflow_datasets is imported lazily so the rest of the package does not
depend on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TFDS_NAMES: tuple[str, ...] = ("mnist", "cifar10")
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
        return _read_source(tfds.data_source(name, split=split, data_dir=data_dir))
    except Exception as first:  # noqa: BLE001 - any failure: try the TensorFlow path next
        try:
            data = tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir, batch_size=-1))
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
