"""Write fosc_jax/data/mnist_subset.npz: the first N train / M test MNIST images (uint8).

Usage: python tools/make_mnist_subset.py [--src DIR_WITH_IDX_FILES] [--out PATH]
       [--n-train 2000] [--n-test 500]
The source folder holds the four original MNIST IDX files (plain or .gz).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fosc_jax.data.local_files import load_mnist_idx  # noqa: E402


def make_subset(src: Path, out: Path, n_train: int, n_test: int) -> None:
    """Read MNIST from ``src`` and save the first ``n_train``/``n_test`` examples to ``out``."""
    raw = load_mnist_idx(src)
    if not 0 < n_train <= len(raw.y_train) or not 0 < n_test <= len(raw.y_test):
        raise ValueError(f"--n-train/--n-test must be in 1..{len(raw.y_train)} / "
                         f"1..{len(raw.y_test)}.")
    arrays = {
        "x_train": raw.x_train[:n_train].astype(np.uint8),
        "y_train": raw.y_train[:n_train].astype(np.uint8),
        "x_test": raw.x_test[:n_test].astype(np.uint8),
        "y_test": raw.y_test[:n_test].astype(np.uint8),
    }
    np.savez_compressed(out, **arrays)
    digest = hashlib.md5(out.read_bytes()).hexdigest()
    print(f"wrote {out}: {os.path.getsize(out)} bytes, md5 {digest}")
    for k, v in arrays.items():
        print(f"  {k} {v.dtype} {v.shape}")
    print(f"  train class counts {np.bincount(arrays['y_train'], minlength=10).tolist()}")
    print(f"  test class counts {np.bincount(arrays['y_test'], minlength=10).tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("/work/shared/data/mnist"))
    default_out = Path(__file__).resolve().parents[1] / "fosc_jax/data/mnist_subset.npz"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    args = parser.parse_args()
    make_subset(args.src, args.out, args.n_train, args.n_test)


if __name__ == "__main__":
    main()
