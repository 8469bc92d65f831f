"""A run's per-epoch files: metrics.jsonl (one JSON row per epoch, epochs 1-based) and
fosc/epoch_XXXX.npz (a seeded sample of the epoch's per-example FOSC, loss and steps).

Both are rewritten through a temporary file and ``os.replace`` (:mod:`.integrity`), so a
crash never leaves a half-written file; only process 0 writes them.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from fosc_jax.errors import RunFileError, warn
from fosc_jax.rundir import integrity

METRICS_FILE = "metrics.jsonl"
FOSC_DIR = "fosc"
FOSC_FILE = re.compile(r"^epoch_(\d{4,})\.npz$")


def truncate_metrics(workdir: str, epoch: int) -> None:
    """Drop metric lines of epochs >= ``epoch`` (written after the resumed checkpoint); a
    partial last line (a crash mid-write, no newline) is dropped with a warning."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        text, torn = _drop_torn_tail(f.read())
    if torn:
        warn(f"{path}: dropped a partial last line ({torn} bytes, a crash mid-write).")
    rows = [json.dumps(row, sort_keys=True) + "\n" for row in _parse_metrics(path, text)
            if row["epoch"] < epoch]
    integrity.atomic_write_text(path, "".join(rows))


def _drop_torn_tail(text: str) -> tuple[str, int]:
    """(text without a partial last line, its length): a last line without newline that is
    no JSON is a crash mid-write; one that is JSON is kept (newline added)."""
    if not text or text.endswith("\n"):
        return text, 0
    head, _, tail = text.rpartition("\n")
    try:
        json.loads(tail)
        return text + "\n", 0
    except json.JSONDecodeError:
        return (head + "\n" if head else ""), len(tail)


def resumable_rows(workdir: str) -> list[dict]:
    """The rows a resume keeps to start from: a torn last line is left out (as
    :func:`truncate_metrics` drops it), any other bad line raises RunFileError."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return _parse_metrics(path, _drop_torn_tail(f.read())[0])


def append_metrics(workdir: str, row: dict) -> None:
    """Append one epoch's JSON line (rewritten atomically with the earlier lines)."""
    path = os.path.join(workdir, METRICS_FILE)
    old = open(path).read() if os.path.exists(path) else ""
    integrity.atomic_write_text(path, old + json.dumps(row, sort_keys=True) + "\n")


def read_metrics(workdir: str) -> list[dict]:
    """Rows of WORKDIR/metrics.jsonl ([] if absent); a bad line raises ValueError naming it."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return _parse_metrics(path, f.read())


def _parse_metrics(path: str, text: str) -> list[dict]:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RunFileError(f"{path}:{i}: not JSON ({err}); fix or delete row {i} (train.py "
                               "writes one JSON object per line).") from err
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise RunFileError(f"{path}:{i}: the row has no integer 'epoch' key; expected one "
                               "JSON object per line as train.py writes them.")
        rows.append(row)
    return rows


def save_fosc_sample(workdir: str, epoch: int, fosc: np.ndarray, loss: np.ndarray,
                     num_steps: np.ndarray, size: int, seed: int) -> None:
    """A seeded sample (at most ``size``) of the epoch's per-example FOSC, loss and steps."""
    folder = os.path.join(workdir, FOSC_DIR)
    os.makedirs(folder, exist_ok=True)
    idx = np.random.default_rng(seed + epoch).permutation(len(fosc))[:size]
    path = os.path.join(folder, f"epoch_{epoch:04d}.npz")
    integrity.atomic_write(path, lambda f: np.savez(
        f, fosc=fosc[idx].astype(np.float32), loss=loss[idx].astype(np.float32),
        num_steps=num_steps[idx].astype(np.int32)), binary=True)


def fosc_epochs(workdir: str) -> list[int]:
    """The epochs with a WORKDIR/fosc/epoch_XXXX.npz sample, ascending."""
    folder = os.path.join(workdir, FOSC_DIR)
    if not os.path.isdir(folder):
        return []
    return sorted(int(m.group(1)) for f in os.listdir(folder) if (m := FOSC_FILE.match(f)))


def load_fosc_sample(workdir: str, epoch: int) -> dict[str, np.ndarray]:
    """fosc (float32), loss (float32) and num_steps (int32) of one epoch's sample."""
    path = os.path.join(workdir, FOSC_DIR, f"epoch_{epoch:04d}.npz")
    if not os.path.exists(path):
        raise ValueError(f"no FOSC sample for epoch {epoch}: {path} is missing.")
    with np.load(path, allow_pickle=False) as data:
        missing = {"fosc", "loss", "num_steps"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}.")
        return {k: np.asarray(data[k]) for k in ("fosc", "loss", "num_steps")}
