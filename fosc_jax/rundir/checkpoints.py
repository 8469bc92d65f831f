"""Orbax checkpoints of the training state, verified on restore.

Checkpoints are written by Orbax's CheckpointManager, which finalises each step atomically
(written to a temporary folder, then renamed), so a preempted run never leaves a half-written
latest checkpoint. Each checkpoint also records a SHA-256 of its content (Orbax custom
metadata, written in the same atomic step) and one of every file in it (FILES_MANIFEST,
written right after); restore checks both, and :func:`restore_newest_good` falls back past
corrupt, truncated or empty step folders to the newest checkpoint that verifies. Orbax saves
are collective in a multi-process run; only process 0 writes the manifests.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Callable, Optional

import flax.serialization
import ml_collections
import orbax.checkpoint as ocp

from fosc_jax.errors import CheckpointError, warn
from fosc_jax.rundir import integrity

CHECKPOINT_DIR = "checkpoints"
FILES_MANIFEST = "fosc_jax_files.json"  # in each step folder: SHA-256 of every file in it
CORRUPT_DIR = "corrupt_checkpoints"  # where training moves checkpoints that fail to verify


def make_manager(workdir: str, config: ml_collections.ConfigDict, *,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """The manager of WORKDIR/checkpoints, keeping ``config.checkpoint_keep`` steps; it
    creates the folder unless ``read_only`` (then the folder must exist)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=int(config.checkpoint_keep),
                                           create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=False)
    with _quiet_absl():  # it reads each step's metadata: a damaged one is ours to report
        return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                                     options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Save ``state`` as checkpoint ``step`` (the global training step; no-op if saved),
    with the SHA-256 of its content in the step's metadata. Collective in multi-process."""
    if step in manager.all_steps():
        return
    import jax
    from jax.experimental import multihost_utils

    tree = flax.serialization.to_state_dict(state)
    manager.save(step, args=ocp.args.StandardSave(tree),
                 custom_metadata={integrity.DIGEST_KEY: integrity.tree_digest(tree)})
    manager.wait_until_finished()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"fosc_jax:saved:{step}")
    if jax.process_index() == 0:
        _write_file_manifest(_step_dir(manager, step))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"fosc_jax:manifest:{step}")


def _step_files(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, f), folder)
                  for root, _, files in os.walk(folder) for f in files
                  if f != FILES_MANIFEST and not f.startswith(integrity.TEMP_PREFIX))


def _write_file_manifest(folder: str) -> None:
    """Record the SHA-256 of every file of a finished checkpoint: any flipped byte, also in
    bytes the content checksum never reads (metadata, unused tails), is then caught."""
    digests = {rel: integrity.file_digest(os.path.join(folder, rel))
               for rel in _step_files(folder)}
    integrity.atomic_write_text(os.path.join(folder, FILES_MANIFEST), json.dumps(digests, indent=1))


def _check_file_manifest(folder: str) -> None:
    """Raise _Unusable if a file recorded in the step's manifest is missing or altered (a
    checkpoint saved without a manifest, e.g. killed in between, is checked by content)."""
    path = os.path.join(folder, FILES_MANIFEST)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            digests = json.load(f)
        assert isinstance(digests, dict)
    except (ValueError, AssertionError, UnicodeDecodeError):
        raise _Unusable(f"its file manifest {FILES_MANIFEST} is garbled") from None
    for rel, digest in sorted(digests.items()):
        full = os.path.join(folder, rel)
        if not os.path.exists(full):
            raise _Unusable(f"the file {rel} is missing")
        if integrity.file_digest(full) != digest:
            raise _Unusable(f"the file {rel} differs from its recorded SHA-256 (altered or "
                            "damaged)")


@contextlib.contextmanager
def _quiet_absl():
    """Silence Orbax's absl lines, ERROR included, while reading a candidate that may be
    damaged: the failure is expected there and reported as one warning of ours."""
    from absl import logging as absl_logging
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.FATAL)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


class _Unusable(Exception):
    """A checkpoint step that cannot be used; ``empty`` when the folder holds no checkpoint."""

    def __init__(self, message: str, empty: bool = False):
        super().__init__(message)
        self.empty = empty


def _step_dir(manager: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(str(manager.directory), str(step))


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
    """Checkpoint ``step`` restored into ``abstract_state``'s structure and shardings (or
    into the target ``abstract_state(step_folder)`` returns), its content checksum
    verified; CheckpointError (naming the folder) if it does not verify."""
    try:
        return _restore_verified(manager, step, abstract_state)
    except _Unusable as err:
        raise CheckpointError(f"checkpoint {_step_dir(manager, step)} is unusable: "
                              f"{err}.") from None


def _restore_verified(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
    folder = _step_dir(manager, step)
    if not os.path.isdir(os.path.join(folder, "default")):
        raise _Unusable("the step folder is empty or incomplete (no 'default' item)",
                        empty=not os.path.isdir(folder) or not os.listdir(folder))
    _check_file_manifest(folder)
    try:
        with _quiet_absl():  # Orbax logs a warning about the item it is not asked to read
            expected = (manager.metadata(step).custom_metadata or {}).get(integrity.DIGEST_KEY)
    except Exception as err:  # noqa: BLE001 - any unreadable metadata makes the step unusable
        raise _Unusable(f"its metadata is unreadable ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None
    if callable(abstract_state):  # a target read from the folder itself
        abstract_state = abstract_state(folder)
    restored = _read(manager, step, flax.serialization.to_state_dict(abstract_state))
    if expected is None:
        warn(f"checkpoint {folder} has no content checksum (written before fosc_jax recorded "
             "them); restored unverified.")
    else:
        found = integrity.tree_digest(restored)
        if found != expected:
            raise _Unusable(f"its content checksum does not match (stored {expected[:12]}..., "
                            f"found {found[:12]}...): a file in it was altered or damaged")
    return flax.serialization.from_state_dict(abstract_state, restored)


def saved_tree(folder: str) -> Any:
    """The tree of array metadata (shapes, dtypes) of the state saved in a step folder;
    _Unusable if Orbax cannot read it."""
    from etils import epath
    try:
        with _quiet_absl():
            meta = ocp.StandardCheckpointHandler().metadata(
                epath.Path(os.path.abspath(os.path.join(folder, "default"))))
    except Exception as err:  # noqa: BLE001 - unreadable metadata makes the step unusable
        raise _Unusable(f"its tree metadata is unreadable ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None
    return getattr(meta, "tree", meta)


def _read(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
    try:
        with _quiet_absl():
            return manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as err:  # noqa: BLE001 - TensorStore/OCDBT/JSON errors of a damaged file
        raise _Unusable(f"it cannot be read ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None


RESCANS = 3  # times a reader re-lists the steps when they changed while it read them


def restore_newest_good(manager: ocp.CheckpointManager, abstract_state: Any, *,
                        quarantine: Optional[str] = None,
                        say: Callable[[str], None] = warn) -> tuple[Optional[Any], Optional[int]]:
    """(state, step) of the newest checkpoint that verifies, or (None, None) if there is none.

    Newer steps that fail (checksum mismatch, unreadable file, empty or incomplete folder) are
    reported through ``say`` and skipped. A failure while a training rotates its checkpoints
    (it finalises a new step, then deletes the oldest, so a reader that listed the steps
    before may read one being deleted) is no corruption: if the steps on disk changed during
    the scan, it is repeated on the new listing. With ``quarantine`` (a folder; training
    passes WORKDIR/corrupt_checkpoints) failed steps are moved there, on process 0, so the
    resumed run can save those steps again. If steps exist but every one holding data is
    corrupt, CheckpointError: starting afresh would silently discard the run.
    """
    import jax
    from jax.experimental import multihost_utils

    for _ in range(RESCANS):
        listed = sorted(manager.all_steps())
        state, good, bad = _scan(manager, abstract_state, listed)
        if not bad:
            break
        time.sleep(0.2)  # let a rotation in progress finish deleting
        with _quiet_absl():
            manager.reload()
        if sorted(manager.all_steps()) == listed:
            break  # nothing rotated: the failures are real
    for step, err in bad:
        say(f"checkpoint {_step_dir(manager, step)} is unusable: {err}; "
            + ("skipping it." if err.empty else "falling back to the previous one."))
    if bad and quarantine is not None:
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("fosc_jax:quarantine")  # all have decided
        if jax.process_index() == 0:
            os.makedirs(quarantine, exist_ok=True)
            for step, _ in bad:
                dest = os.path.join(quarantine, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(_step_dir(manager, step), dest)
                say(f"moved checkpoint step {step} to {dest}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("fosc_jax:quarantined")
        with _quiet_absl():
            manager.reload()
    if good is None and any(not err.empty for _, err in bad):
        where = (f"moved to {os.path.basename(quarantine)}/" if quarantine is not None
                 else "see the warnings")
        raise CheckpointError(
            f"no usable checkpoint in {manager.directory}: all {len(bad)} steps fail to "
            f"verify ({where}); restore them from a backup, or rerun with --restart to "
            "start afresh.")
    if good is not None and bad:
        say(f"using checkpoint step {good}, the newest that verifies.")
    return state, good


def _scan(manager: ocp.CheckpointManager, abstract_state: Any, steps: list[int]):
    """(state, step, [(step, _Unusable), ...]): the newest of ``steps`` that verifies and the
    newer ones that failed."""
    bad: list[tuple[int, _Unusable]] = []
    for step in reversed(steps):
        try:
            return _restore_verified(manager, step, abstract_state), step, bad
        except _Unusable as err:
            bad.append((step, err))
    return None, None, bad
