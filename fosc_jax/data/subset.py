"""Training subsets (``data.train_limit``): which N examples, and a warning for missing classes."""

from __future__ import annotations

import warnings

import numpy as np

SUBSET_MODES: tuple[str, ...] = ("random", "first")


def subset_indices(n: int, limit: int, mode: str, seed: int) -> np.ndarray:
    """Indices (ascending) of ``limit`` of ``n`` examples: a seeded uniform random choice
    (``mode="random"``) or the first ``limit`` (``"first"``, file order). ``limit`` 0 or
    >= n: all."""
    if mode not in SUBSET_MODES:
        raise ValueError(f"data.subset = {mode!r} is invalid: expected one of {list(SUBSET_MODES)}.")
    if limit <= 0 or limit >= n:
        return np.arange(n)
    if mode == "first":
        return np.arange(limit)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def warn_missing_classes(labels: np.ndarray, num_classes: int, what: str = "training set") -> list[int]:
    """Warn (UserWarning) when ``labels`` lack some of the ``num_classes`` classes; return them."""
    missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
    if missing:
        warnings.warn(
            f"the {what} holds {num_classes - len(missing)} of {num_classes} classes (missing "
            f"{missing}); the model cannot learn them. With data.train_limit, use "
            f"data.subset='random', or a larger limit.", UserWarning, stacklevel=2)
    return missing
