"""What a run directory already holds, moving a run aside for ``--restart``, and the stale
temporary files of our atomic writes.

A fresh start must never silently replace a run: :func:`describe` names the history a
workdir holds (metrics.jsonl rows, FOSC samples, quarantined checkpoints), which training
refuses to overwrite when no checkpoint can resume it; :func:`move_aside` renames the whole
workdir in one atomic ``os.replace`` to a timestamped sibling, so nothing is deleted.
"""
from __future__ import annotations

import os
import time

from fosc_jax.rundir import metrics
from fosc_jax.rundir.integrity import TEMP_PREFIX
from fosc_jax.rundir.checkpoints import CORRUPT_DIR
from fosc_jax.rundir.lock import LOCK_FILE

STALE_AFTER_S = 300.0  # older than this, a temporary file is no live write's


def describe(workdir: str) -> list[str]:
    """What of a run's history ``workdir`` holds, e.g. ['3 metrics.jsonl rows', ...] ([] if
    none). Reads metrics.jsonl, so a garbled row raises RunFileError here, before compute."""
    found = []
    rows = metrics.resumable_rows(workdir) if os.path.isdir(workdir) else []
    if rows:
        found.append(f"{len(rows)} {metrics.METRICS_FILE} rows")
    samples = metrics.fosc_epochs(workdir)
    if samples:
        found.append(f"{len(samples)} FOSC samples in {metrics.FOSC_DIR}/")
    corrupt = os.path.join(workdir, CORRUPT_DIR)
    if os.path.isdir(corrupt) and os.listdir(corrupt):
        found.append(f"{len(os.listdir(corrupt))} checkpoints in {CORRUPT_DIR}/")
    return found


def holds_anything(workdir: str) -> bool:
    """True if ``workdir`` holds more than its lock file."""
    return os.path.isdir(workdir) and any(n != LOCK_FILE for n in os.listdir(workdir))


def move_aside(workdir: str) -> str:
    """Rename ``workdir`` to ``<workdir>.replaced-<YYYYmmdd-HHMMSS>[-n]`` (one atomic rename,
    nothing deleted); returns the new path."""
    base = f"{os.path.normpath(workdir)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    dest, n = base, 1
    while os.path.lexists(dest):
        dest, n = f"{base}-{n}", n + 1
    os.replace(workdir, dest)
    return dest


def remove_stale_temp_files(workdir: str, older_than_s: float = STALE_AFTER_S) -> list[str]:
    """Delete the ``.tmp_*`` files a crash left in ``workdir`` and its fosc/ folder (only
    files of our naming, only there, only older than ``older_than_s``: a concurrent
    evaluation's write in progress is younger). Returns the paths removed."""
    removed, now = [], time.time()
    for folder in (workdir, os.path.join(workdir, metrics.FOSC_DIR)):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if (name.startswith(TEMP_PREFIX) and os.path.isfile(path)
                    and not os.path.islink(path)
                    and now - os.path.getmtime(path) > older_than_s):
                os.unlink(path)
                removed.append(path)
    return removed
