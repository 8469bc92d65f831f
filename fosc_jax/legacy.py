"""Runs written by versions that numbered epochs from 0 (metrics.jsonl rows, fosc/ files).

Epochs are 1-based everywhere now (console, metrics.jsonl, fosc/epoch_XXXX.npz, figures):
epoch N is the N-th epoch trained. A run folder holding an epoch-0 row or
fosc/epoch_0000.npz is an old one: :func:`migrate_run` renumbers it on disk (training does
this before resuming), :func:`shift` renumbers rows in memory (the report).
"""
from __future__ import annotations

import json
import os
import re

from fosc_jax import integrity

FOSC_FILE = re.compile(r"^epoch_(\d{4,})\.npz$")


def zero_based(rows: list[dict]) -> bool:
    """Whether metrics rows come from a 0-based version (one has epoch 0)."""
    return any(r.get("epoch") == 0 for r in rows)


def shift(rows: list[dict]) -> list[dict]:
    """Rows renumbered to 1-based epochs if they are 0-based; else unchanged."""
    return [{**r, "epoch": r["epoch"] + 1} for r in rows] if zero_based(rows) else rows


def fosc_zero_based(workdir: str) -> bool:
    """Whether WORKDIR/fosc holds an epoch_0000.npz (0-based numbering)."""
    return os.path.exists(os.path.join(workdir, "fosc", "epoch_0000.npz"))


def migrate_run(workdir: str) -> bool:
    """Renumber a 0-based run to 1-based on disk (metrics.jsonl rewritten atomically, fosc
    files renamed from the highest epoch down). Returns whether anything changed."""
    changed = False
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        tail = ""
        try:
            rows = [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            # A partial last line (a crash mid-write) is left as it is, for the resume's
            # truncate_metrics to drop with its warning; any other bad line is its error.
            rows, tail = [json.loads(line) for line in lines[:-1]], lines[-1]
        if zero_based(rows):
            integrity.atomic_write_text(path, "".join(
                json.dumps(r, sort_keys=True) + "\n" for r in shift(rows)) + tail)
            changed = True
    if fosc_zero_based(workdir):
        folder = os.path.join(workdir, "fosc")
        epochs = sorted((int(m.group(1)) for f in os.listdir(folder)
                         if (m := FOSC_FILE.match(f))), reverse=True)
        for e in epochs:
            os.replace(os.path.join(folder, f"epoch_{e:04d}.npz"),
                       os.path.join(folder, f"epoch_{e + 1:04d}.npz"))
        changed = True
    return changed


# Checkpoints of versions before defenses carried their own state: the curriculum's
# plateau state was three top-level fields of the train state.
LEGACY_CURRICULUM = ("curriculum_k", "curriculum_best", "curriculum_wait")


def checkpoint_target(target: dict, saved_keys: list):
    """(target, upgrade) to read a checkpoint saved with the old layout into ``target``
    (a state dict with "defense_state"), or None when ``saved_keys`` are not that layout.
    ``upgrade`` turns the restored old-layout dict into the new one: the curriculum state
    becomes ``defense_state`` {"k", "best", "wait"}; other defenses carry none."""
    if ("defense_state" not in target or "defense_state" in saved_keys or not set(LEGACY_CURRICULUM) <= set(saved_keys)):
        return None
    import jax
    like = target["step"]
    sharding = getattr(like, "sharding", None)
    old = {k: v for k, v in target.items() if k != "defense_state"}
    for name, dtype in zip(LEGACY_CURRICULUM, ("int32", "float32", "int32")):
        old[name] = jax.ShapeDtypeStruct((), dtype, sharding=sharding)
    wanted = target["defense_state"]

    def upgrade(restored: dict) -> dict:
        new = {k: v for k, v in restored.items() if k not in LEGACY_CURRICULUM}
        values = dict(zip(("k", "best", "wait"), (restored[n] for n in LEGACY_CURRICULUM)))
        new["defense_state"] = {k: values[k] for k in wanted} if wanted else {}
        return new
    return old, upgrade
