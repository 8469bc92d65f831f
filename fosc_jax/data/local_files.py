"""The ``files:DIR`` source: read MNIST IDX, CIFAR-10 binary or .npz files from disk.

The format is detected from the file names present in DIR (or DIR is the .npz itself).
Nothing is downloaded and nothing is unpickled (``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fosc_jax.data.cifar_binary import read_cifar_batches
from fosc_jax.data.idx import read_idx

MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILES: tuple[str, ...] = ("test_batch.bin",)
CIFAR_SUBDIR: str = "cifar-10-batches-bin"
NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")

_EXPECTED = (
    f"MNIST IDX files {', '.join(f + '[.gz]' for f in MNIST_FILES)}; or CIFAR-10 binary files "
    f"{', '.join(CIFAR_TRAIN_FILES + CIFAR_TEST_FILES)} (optionally inside {CIFAR_SUBDIR}/); "
    f"or exactly one .npz with arrays {', '.join(NPZ_KEYS)}"
)


class RawSplits(NamedTuple):
    """Arrays as read from disk, before they become a Dataset; ``fmt`` names the format."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fmt: str


def _find_mnist(folder: Path, base: str) -> Path | None:
    for name in (base, base + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _require(
    folder: Path, names: tuple[str, ...], found: list[Path | None], fmt: str
) -> list[Path]:
    missing = [n for n, p in zip(names, found) if p is None]
    if missing:
        raise FileNotFoundError(f"{folder}: looks like {fmt} but is missing {', '.join(missing)}.")
    return [p for p in found if p is not None]


def _as_images(x: np.ndarray, source: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 in [0, 255], got {x.dtype}; convert "
                         "with (x * 255).round().astype(np.uint8) if they are floats in [0, 1].")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(
            f"{source}: images must be [N, H, W] or [N, H, W, C], got shape {x.shape}."
        )
    return x


def _as_labels(y: np.ndarray, source: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: labels must be integer class ids [N] (not one-hot), got "
                         f"{y.dtype} {y.shape}.")
    if len(y) and (y.min() < 0 or y.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{source}: labels must be non-negative int32 values, got range "
                         f"[{y.min()}, {y.max()}].")
    return y.astype(np.int32)


def load_mnist_idx(folder: Path) -> RawSplits:
    """Read the four MNIST IDX files (plain or .gz) from ``folder``."""
    found = [_find_mnist(folder, b) for b in MNIST_FILES]
    paths = _require(folder, MNIST_FILES, found, "MNIST IDX")
    arrays = []
    for path, is_images in zip(paths, (True, False, True, False)):
        arr = read_idx(path)
        arrays.append(_as_images(arr, str(path)) if is_images else _as_labels(arr, str(path)))
    return RawSplits(*arrays, fmt="mnist-idx")


def load_cifar_binary(folder: Path) -> RawSplits:
    """Read the CIFAR-10 binary release (5 train batches + test batch) from ``folder``."""
    def find(names: tuple[str, ...]) -> list[Path]:
        found = [folder / n if (folder / n).is_file() else None for n in names]
        return _require(folder, names, found, "the CIFAR-10 binary release")

    x_train, y_train = read_cifar_batches([str(p) for p in find(CIFAR_TRAIN_FILES)])
    x_test, y_test = read_cifar_batches([str(p) for p in find(CIFAR_TEST_FILES)])
    return RawSplits(x_train, y_train, x_test, y_test, fmt="cifar10-binary")


def load_npz(path: Path) -> RawSplits:
    """Read x_train, y_train, x_test, y_test from an .npz without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise ValueError(
                    f"{path}: .npz lacks arrays {', '.join(missing)} (has "
                    f"{', '.join(z.files) or 'none'}); expected {', '.join(NPZ_KEYS)}."
                )
            arrays = {k: z[k] for k in NPZ_KEYS}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(
                f"{path}: holds pickled data or object arrays, which are refused for safety "
                "(allow_pickle=False); save plain numeric arrays (uint8 images, integer labels)."
            ) from e
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e}).") from e
    return RawSplits(
        _as_images(arrays["x_train"], f"{path}[x_train]"),
        _as_labels(arrays["y_train"], f"{path}[y_train]"),
        _as_images(arrays["x_test"], f"{path}[x_test]"),
        _as_labels(arrays["y_test"], f"{path}[y_test]"),
        fmt="npz",
    )


def load_files(path: str | os.PathLike) -> RawSplits:
    """Detect the format at ``path`` (a folder, or an .npz file) and read it."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"files source: {root} does not exist; expected a folder with {_EXPECTED}."
        )
    if root.is_file():
        if root.suffix != ".npz":
            raise ValueError(f"files source: {root} is a file but not an .npz; point at a folder "
                             f"with {_EXPECTED}.")
        return load_npz(root)
    if not any((root / n).is_file() for n in CIFAR_TRAIN_FILES + CIFAR_TEST_FILES) and (
        root / CIFAR_SUBDIR
    ).is_dir():
        root = root / CIFAR_SUBDIR
    has_mnist = any(_find_mnist(root, b) for b in MNIST_FILES)
    has_cifar = any((root / n).is_file() for n in CIFAR_TRAIN_FILES + CIFAR_TEST_FILES)
    npzs = sorted(p for p in root.glob("*.npz") if p.is_file())
    kinds = [k for k, present in (("MNIST IDX", has_mnist), ("CIFAR-10 binary", has_cifar),
                                  (".npz", bool(npzs))) if present]
    if not kinds:
        raise FileNotFoundError(
            f"files source: {root} holds no known data files; expected {_EXPECTED}."
        )
    if len(kinds) > 1:
        raise ValueError(f"files source: {root} holds several formats ({', '.join(kinds)}); "
                         "point at a folder with only one, or at the .npz file itself.")
    if has_mnist:
        return load_mnist_idx(root)
    if has_cifar:
        return load_cifar_binary(root)
    if len(npzs) > 1:
        raise ValueError(f"files source: {root} holds {len(npzs)} .npz files "
                         f"({', '.join(p.name for p in npzs)}); pass the path of the one to use.")
    return load_npz(npzs[0])

