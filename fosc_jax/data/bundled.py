"""The ``bundled`` source: a small MNIST subset shipped inside the package.

File: fosc_jax/data/mnist_subset.npz (np.savez_compressed, 406,850 bytes), made by
tools/make_mnist_subset.py from the original MNIST IDX files (60k/10k): the first 2,000
training images and the first 500 test images, in file order, uint8 [N, 28, 28, 1] with
uint8 labels. Train class counts 191/220/198/191/214/180/200/224/172/210, test counts
42/67/55/45/55/50/43/49/40/54. MD5 of ``arr.tobytes()``: x_train d8eb46c54f2c8f0755ef13638cf55d9c,
y_train a55e0ec9daedf3ca56ed6123071223a8, x_test 0b72357ee799b8410518b416f3cde028,
y_test 6a52031b05b91f6ac7801851690bffbd. Meant for tests, demos and smoke runs, not for
reproducing the paper's numbers.
"""

from __future__ import annotations

from pathlib import Path

from fosc_jax.data.local_files import RawSplits, load_npz

BUNDLED_NAMES: tuple[str, ...] = ("mnist",)
BUNDLED_PATH: Path = Path(__file__).resolve().with_name("mnist_subset.npz")


def load_bundled(name: str) -> RawSplits:
    """Read the bundled subset of data set ``name`` (only "mnist" is shipped)."""
    if name not in BUNDLED_NAMES:
        raise ValueError(f"bundled source: only {BUNDLED_NAMES} is shipped, got {name!r}; use the "
                         "tfds or files:DIR source for other data sets.")
    if not BUNDLED_PATH.is_file():
        raise FileNotFoundError(f"bundled source: {BUNDLED_PATH} is missing; regenerate it with "
                                "`python tools/make_mnist_subset.py --src DIR_WITH_MNIST_IDX`.")
    return load_npz(BUNDLED_PATH)
