"""The files that carry a reproduction from one machine to the next.

``pack`` writes OUT into a gzipped tar: every run's metrics, FOSC samples, config and the
newest complete checkpoint of each run still in progress (older checkpoints, the checkpoints
of runs whose final model is exported, lock and temporary files are left out: nothing reads
them again), the exported models, the evaluations, figures and reports. It is cut into
volumes of at most ``volume_bytes`` (16 MiB by default): FILE, then FILE.<tag>.part2 ...
beside it (:mod:`fosc_jax.reproduce.volumes`), refused above ``max_volumes`` with the
largest contributors named, so a caller learns what to drop before a session ends.
``unpack`` checks that the whole set is there and intact, then restores it into a fresh
folder, where rerunning the same reproduction command continues exactly where it was taken.
"""
from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from typing import Iterator, Optional

from fosc_jax.reproduce import volumes

MAX_BYTES = 16 * 2 ** 20                     # one volume, and one file of the accelerator host
VOLUME_BYTES_ENV = "FOSC_JAX_ARCHIVE_VOLUME_BYTES"   # a smaller volume (tests, small disks)
CHECKPOINT_DIR = "checkpoints"
COMPLETE_MARK = "commit_success.txt"     # Orbax writes it last into a finished step folder
RUNS_DIR, MODELS_DIR = "runs", "models"  # OUT/runs/NAME and its export OUT/models/NAME
EXPORT_FILES = ("variables.npz", "config.json", "model.json")   # a finished export
SKIPPED_NAMES = (".lock",)
SKIPPED_PREFIXES = (".tmp_", ".tmp")


class ArchiveError(ValueError):
    """The archive cannot be written or read as asked."""


def mib(n: float) -> str:
    """``n`` bytes for a message: MiB with one decimal (KiB below 0.1 MiB)."""
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 / 10 else f"{n / 2 ** 10:.0f} KiB"


def volume_bytes() -> int:
    """The volume size: $FOSC_JAX_ARCHIVE_VOLUME_BYTES when set, else 16 MiB."""
    raw = os.environ.get(VOLUME_BYTES_ENV, "").strip()
    if not raw:
        return MAX_BYTES
    if not raw.isdigit() or int(raw) < volumes.MIN_VOLUME_BYTES:
        raise ArchiveError(f"{VOLUME_BYTES_ENV}: {raw!r} is not a whole number of bytes >= "
                           f"{volumes.MIN_VOLUME_BYTES}.")
    return int(raw)


def _newest_complete_step(folder: str) -> str | None:
    steps = [d for d in os.listdir(folder) if d.isdigit()
             and os.path.exists(os.path.join(folder, d, COMPLETE_MARK))]
    return max(steps, key=int) if steps else None


def _exported(out: str, rel_checkpoints: str) -> bool:
    """Whether the run owning OUT/runs/NAME/checkpoints has its final model exported."""
    parts = rel_checkpoints.split(os.sep)
    if len(parts) != 3 or parts[0] != RUNS_DIR:
        return False
    model = os.path.join(out, MODELS_DIR, parts[1])
    return all(os.path.isfile(os.path.join(model, f)) for f in EXPORT_FILES)


def members(out: str) -> Iterator[str]:
    """Paths (relative to ``out``, sorted) that go into the archive."""
    for root, dirs, files in os.walk(out):
        rel_root = os.path.relpath(root, out)
        if os.path.basename(root) == CHECKPOINT_DIR:
            keep = None if _exported(out, rel_root) else _newest_complete_step(root)
            dirs[:] = [keep] if keep is not None else []
        dirs.sort()
        for name in sorted(files):
            if name in SKIPPED_NAMES or name.startswith(SKIPPED_PREFIXES):
                continue
            yield os.path.normpath(os.path.join(rel_root, name))


def contributors(out: str, names: list[str], top: int = 3) -> str:
    """The ``top`` largest parts of the archive (a checkpoint step, an exported model, a
    run's other files, else a file), with their sizes before compression."""
    sizes: dict[str, int] = {}
    for name in names:
        parts = name.split(os.sep)
        cut = parts.index(CHECKPOINT_DIR) + 2 if CHECKPOINT_DIR in parts[:-1] else 2
        key = os.sep.join(parts[:min(cut, len(parts))])
        sizes[key] = sizes.get(key, 0) + os.path.getsize(os.path.join(out, name))
    big = sorted(sizes, key=lambda k: -sizes[k])[:top]
    return ", ".join(f"{k} ({mib(sizes[k])})" for k in big)


@dataclasses.dataclass(frozen=True)
class Packed:
    """What ``pack`` wrote: the volume files (the first is FILE) and their total size."""
    files: list[str]
    size: int

    def describe(self) -> str:
        more = len(self.files) - 1
        beside = f" and {more} more volume(s) beside it" if more else ""
        return f"{self.files[0]}{beside} ({mib(self.size)})"


def _tar_gz(out: str, names: list[str], target: str) -> None:
    with open(target, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for name in names:
            info = tar.gettarinfo(os.path.join(out, name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(os.path.join(out, name), "rb") as src:
                tar.addfile(info, src)


def pack(out: str, path: str, volume_bytes: int = MAX_BYTES, max_volumes: int = 1) -> Packed:
    """Write ``out`` into the volume set ``path`` (committed atomically; parts of an older
    set at the same name are removed); refused above ``max_volumes`` volumes."""
    if not os.path.isdir(out):
        raise ArchiveError(f"nothing to pack: {out!r} is not a folder.")
    names = list(members(out))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_archive_")
    os.close(fd)
    try:
        _tar_gz(out, names, tmp)
        try:
            lay = volumes.layout(tmp, path, volume_bytes)
        except volumes.VolumeError as err:
            raise ArchiveError(str(err)) from err
        size = os.path.getsize(tmp) + len(lay.head)
        if len(lay.chunks) > max_volumes:
            limit = (f"{mib(volume_bytes)} limit" if max_volumes == 1 else
                     f"limit of {max_volumes} volumes of {mib(volume_bytes)} "
                     f"(it needs {len(lay.chunks)})")
            raise ArchiveError(f"the archive would be {mib(size)}, over the {limit}; largest "
                               f"contributors (before compression): {contributors(out, names)}.")
        return Packed(volumes.commit(lay, tmp, path), size)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _segments(path: str) -> list[tuple[str, int, int]]:
    try:
        return volumes.verify(path)
    except volumes.VolumeError as err:
        raise ArchiveError(str(err)) from err
    except OSError as err:
        raise ArchiveError(f"cannot read the archive {path!r}: {err}.") from err


def check_set(path: str) -> Optional[str]:
    """One line saying why the volume set ``path`` cannot be unpacked, or None."""
    try:
        _segments(path)
    except ArchiveError as err:
        return str(err)
    return None


def unpack(path: str, out: str) -> int:
    """Restore the volume set ``path`` into ``out`` (which must be empty or absent); returns
    the number of files. Every volume is checked first and the files land in a temporary
    folder renamed to ``out`` at the end, so a bad set leaves ``out`` untouched. Only regular
    files and folders inside ``out`` are accepted."""
    if os.path.isdir(out) and os.listdir(out):
        raise ArchiveError(f"{out!r} is not empty: unpack into a fresh folder (the archive "
                           "holds the whole reproduction).")
    segments = _segments(path)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp_unpack_")
    try:
        with volumes.Joined(segments) as raw, \
                io.BufferedReader(raw, 1 << 20) as stream:
            try:
                tar = tarfile.open(fileobj=stream, mode="r:gz")
                entries = tar.getmembers()
            except (OSError, EOFError, zlib.error, tarfile.TarError) as err:
                raise ArchiveError(f"cannot read the archive {path!r}: {err}.") from err
            with tar:
                bad = [m.name for m in entries if not (m.isfile() or m.isdir())
                       or os.path.isabs(m.name) or ".." in m.name.split("/")]
                if bad:
                    raise ArchiveError(f"{path!r} holds entries outside a plain folder "
                                       f"tree: {bad[:3]}.")
                tar.extractall(tmp, filter="data")
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
        return sum(m.isfile() for m in entries)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
