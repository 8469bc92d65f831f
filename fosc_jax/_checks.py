"""Boundary checks shared by the public functions: clear ValueErrors before any tracing cost.

Value checks (eps >= 0, labels in range) only run on concrete inputs; under ``jax.jit`` the
arguments are tracers and only their shapes can be checked.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_concrete(a: Any) -> bool:
    """True when ``a`` holds real values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(a, jax.core.Tracer)


def check_same_shape(name: str, a: Any, ref_name: str, ref: Any) -> None:
    """Raise unless ``a`` has the shape of ``ref`` and at least a batch axis."""
    ref_shape = tuple(np.shape(ref))
    if len(ref_shape) < 1:
        raise ValueError(f"{ref_name} must have a leading batch axis, got shape {ref_shape}.")
    if tuple(np.shape(a)) != ref_shape:
        raise ValueError(
            f"{name} has shape {tuple(np.shape(a))}, expected {ref_shape} (the shape of "
            f"{ref_name}).")


def check_eps(eps: Any, batch: int, name: str = "eps") -> Any:
    """Check eps is a scalar or shape [batch] and, when concrete, non-negative."""
    shape = tuple(np.shape(eps))
    if shape not in ((), (batch,)):
        raise ValueError(
            f"{name} must be a scalar or have shape ({batch},) (one value per example), "
            f"got shape {shape}.")
    if is_concrete(eps) and np.any(np.asarray(eps) < 0):
        raise ValueError(f"{name} must be >= 0, got {np.asarray(eps)}.")
    return eps


def check_positive(value: Any, batch: int, name: str) -> None:
    """Check a scalar or per-example setting is > 0 (when concrete)."""
    shape = tuple(np.shape(value))
    if shape not in ((), (batch,)):
        raise ValueError(
            f"{name} must be a scalar or have shape ({batch},), got shape {shape}.")
    if is_concrete(value) and np.any(np.asarray(value) <= 0):
        raise ValueError(f"{name} must be > 0, got {np.asarray(value)}.")


def check_labels(labels: Any, batch: int, num_classes: int | None = None,
                 name: str = "y") -> None:
    """Check integer labels of shape [batch], in [0, num_classes) when concrete."""
    shape = tuple(np.shape(labels))
    if shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one label per example), "
                         f"got shape {shape}.")
    if not np.issubdtype(np.asarray(labels).dtype if is_concrete(labels) else labels.dtype,
                         np.integer):
        raise ValueError(f"{name} must hold integer class labels, got dtype "
                         f"{getattr(labels, 'dtype', type(labels))}.")
    if num_classes is not None and is_concrete(labels):
        arr = np.asarray(labels)
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got values in "
                             f"[{arr.min()}, {arr.max()}].")


def check_logits(logits: Any, batch: int, name: str = "logits") -> int:
    """Check logits are [batch, C] and return C."""
    shape = tuple(np.shape(logits))
    if len(shape) != 2 or shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch}, num_classes), got {shape}.")
    return shape[1]
