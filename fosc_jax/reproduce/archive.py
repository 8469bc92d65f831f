"""One file that carries a reproduction from one machine to the next.

``pack`` writes OUT into a gzipped tar: every run's metrics, FOSC samples, config and the
newest complete checkpoint of each run (older checkpoints, lock and temporary files are left
out), the exported models, the evaluations, figures and reports. ``unpack`` restores it into
a fresh folder, where rerunning the same reproduction command continues exactly where the
archive was taken. The archive is written atomically and refused above ``max_bytes`` with
the largest contributors named, so a caller learns what to drop before a session ends.
"""
from __future__ import annotations

import os
import tarfile
import tempfile
from typing import Iterator

MAX_BYTES = 16 * 2 ** 20
CHECKPOINT_DIR = "checkpoints"
COMPLETE_MARK = "commit_success.txt"     # Orbax writes it last into a finished step folder
SKIPPED_NAMES = (".lock",)
SKIPPED_PREFIXES = (".tmp_", ".tmp")


class ArchiveError(ValueError):
    """The archive cannot be written or read as asked."""


def _newest_complete_step(folder: str) -> str | None:
    steps = [d for d in os.listdir(folder) if d.isdigit()
             and os.path.exists(os.path.join(folder, d, COMPLETE_MARK))]
    return max(steps, key=int) if steps else None


def members(out: str) -> Iterator[str]:
    """Paths (relative to ``out``, sorted) that go into the archive."""
    for root, dirs, files in os.walk(out):
        rel_root = os.path.relpath(root, out)
        if os.path.basename(root) == CHECKPOINT_DIR:
            keep = _newest_complete_step(root)
            dirs[:] = [keep] if keep is not None else []
        dirs.sort()
        for name in sorted(files):
            if name in SKIPPED_NAMES or name.startswith(SKIPPED_PREFIXES):
                continue
            yield os.path.normpath(os.path.join(rel_root, name))


def pack(out: str, path: str, max_bytes: int = MAX_BYTES) -> int:
    """Write ``out`` into the archive ``path`` (atomically); returns its size in bytes."""
    if not os.path.isdir(out):
        raise ArchiveError(f"nothing to pack: {out!r} is not a folder.")
    names = list(members(out))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_archive_")
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            for name in names:
                info = tar.gettarinfo(os.path.join(out, name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(os.path.join(out, name), "rb") as src:
                    tar.addfile(info, src)
        size = os.path.getsize(tmp)
        if size > max_bytes:
            big = sorted(names, key=lambda n: -os.path.getsize(os.path.join(out, n)))[:3]
            raise ArchiveError(
                f"the archive would be {size / 2 ** 20:.1f} MiB, over the {max_bytes / 2 ** 20:.0f} "
                f"MiB limit; largest files: {', '.join(big)}.")
        os.replace(tmp, path)
        return size
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def unpack(path: str, out: str) -> int:
    """Restore the archive ``path`` into ``out`` (which must be empty or absent); returns the
    number of files. Only regular files and folders inside ``out`` are accepted."""
    if os.path.isdir(out) and os.listdir(out):
        raise ArchiveError(f"{out!r} is not empty: unpack into a fresh folder (the archive "
                           "holds the whole reproduction).")
    try:
        tar = tarfile.open(path, mode="r:gz")
    except (OSError, tarfile.TarError) as err:
        raise ArchiveError(f"cannot read the archive {path!r}: {err}.") from err
    with tar:
        bad = [m.name for m in tar.getmembers() if not (m.isfile() or m.isdir())
               or os.path.isabs(m.name) or ".." in m.name.split("/")]
        if bad:
            raise ArchiveError(f"{path!r} holds entries outside a plain folder tree: {bad[:3]}.")
        os.makedirs(out, exist_ok=True)
        tar.extractall(out, filter="data")
        return sum(m.isfile() for m in tar.getmembers())
