"""Content checksums of array trees, and atomic file writes that respect the user's umask.

:func:`tree_digest` hashes every leaf of a pytree (its path, dtype, shape and bytes) with
SHA-256. Checkpoints record the digest of the state they hold and restore recomputes it from
the arrays read back, so a flipped byte in a checkpoint file (which either fails to decode or
decodes to different numbers) is caught instead of loading silently as other weights.

:func:`atomic_write` writes through a temporary file in the destination folder and
``os.replace``; ``tempfile.mkstemp`` creates its file 0600, so the file is given the mode an
ordinary ``open(path, "w")`` would have (0666 minus the umask) before it is renamed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Callable, IO

import jax
import numpy as np

DIGEST_KEY = "fosc_jax_sha256"
TEMP_PREFIX = ".tmp_"  # atomic_write's temporary files (a crash may leave one behind)


def host_array(leaf: Any) -> np.ndarray:
    """A leaf as a host numpy array; for a jax.Array this process's first shard, which is
    the whole value for the replicated arrays a training state holds (also multi-process)."""
    if isinstance(leaf, jax.Array):
        if leaf.is_fully_addressable:
            return np.asarray(leaf)
        if not leaf.is_fully_replicated:
            raise ValueError("tree_digest: a leaf is sharded over other processes; only "
                             "replicated or process-local arrays can be hashed here.")
        return np.asarray(leaf.addressable_data(0))
    return np.asarray(leaf)


def tree_digest(tree: Any) -> str:
    """SHA-256 (hex) over every leaf's key path, dtype, shape and raw bytes, in tree order."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.ascontiguousarray(host_array(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_digest(path: str) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows, else set and reset)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 minus the umask."""
    return 0o666 & ~current_umask()


def atomic_write(path: str, write: Callable[[IO], None], binary: bool = False) -> None:
    """Create or replace ``path`` atomically: ``write(f)`` fills a temporary file in the same
    folder, which gets the user's usual file mode, is flushed to disk and renamed over it."""
    folder = os.path.dirname(path) or "."
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=suffix)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: str, obj: Any, sort_keys: bool = False) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically, creating its folder; numpy
    scalars are written as floats."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, default=float,
                                           sort_keys=sort_keys))
