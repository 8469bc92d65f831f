"""Training subsets (``data.train_limit``): which N examples, and a warning for missing classes."""

from __future__ import annotations

import warnings
from typing import Optional

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


def eval_subset_indices(n: int, num_examples: Optional[int], seed: int = 0) -> np.ndarray:
    """Sorted indices of the fixed, seeded random test subset of size ``num_examples`` (all
    when None or >= n): the examples evaluation and the per-epoch test numbers score."""
    if num_examples is not None and num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
    return subset_indices(n, 0 if num_examples is None else num_examples, "random", seed)


def warn_missing_classes(labels: np.ndarray, num_classes: int, what: str = "training set") -> list[int]:
    """Warn (UserWarning) when ``labels`` lack some of the ``num_classes`` classes; return them."""
    missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
    if missing:
        warnings.warn(
            f"the {what} holds {num_classes - len(missing)} of {num_classes} classes (missing "
            f"{missing}); the model cannot learn them. With data.train_limit, use "
            f"data.subset='random', or a larger limit.", UserWarning, stacklevel=2)
    return missing
