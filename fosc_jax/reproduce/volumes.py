"""A gzipped tar split into volumes of at most ``volume_bytes``, committed by one rename.

Layout: the first volume, FILE, starts with a small gzip member holding one tar entry,
:data:`MANIFEST` (JSON: each volume's name, payload bytes and SHA-256), followed by the
first chunk of the payload (the gzipped tar of the files); the other volumes hold the
following chunks and are named ``FILE.<tag>.partK`` (K = 2, 3, ...), where <tag> is the
start of the payload's SHA-256. So FILE alone is a plain .tar.gz when everything fits one
volume, and ``cat FILE FILE.<tag>.part2 ... | tar -xz`` reads a larger set with standard
tools (the manifest comes out as an extra file).

Why the tag: the parts are renamed into place first and FILE, which names them, last, so a
reader finds the previous complete set or the new one, never a mix, even when a session
dies between two renames; a part of an older set never bears a name that a newer FILE
lists, and the older parts are removed once the new FILE is in place. A reader checks
every volume's size and SHA-256 against the manifest before anything is unpacked.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import zlib
from typing import BinaryIO, Optional

MANIFEST = ".archive_volumes.json"
FORMAT = "fosc_jax archive volumes 1"
MIN_VOLUME_BYTES = 4096
TAG_HEX = 8
_BLOCK = 1 << 20


class VolumeError(ValueError):
    """A volume set that cannot be written or read as asked."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a payload is cut: the first volume's head (gzip member with the manifest) and
    the (name, offset, length) of each volume's chunk of the payload."""
    head: bytes
    chunks: list[tuple[str, int, int]]


def part_name(path: str, tag: str, k: int) -> str:
    """The file name of volume ``k`` (2, 3, ...) of the set whose first volume is ``path``."""
    return f"{os.path.basename(path)}.{tag}.part{k}"


def _parts_pattern(path: str) -> re.Pattern:
    return re.compile(re.escape(os.path.basename(path)) + r"\.[0-9a-f]{%d}\.part\d+$" % TAG_HEX)


def _sha256(f: BinaryIO, length: int) -> str:
    h = hashlib.sha256()
    while length > 0:
        block = f.read(min(_BLOCK, length))
        if not block:
            break
        h.update(block)
        length -= len(block)
    return h.hexdigest()


def _head(manifest: dict) -> bytes:
    """The gzip member holding the manifest as one tar entry (no end-of-archive blocks, so
    the payload's tar entries follow it in the concatenated stream)."""
    data = json.dumps(manifest, indent=1).encode()
    info = tarfile.TarInfo(MANIFEST)
    info.size, info.mode = len(data), 0o644
    entry = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape") + data
    entry += b"\0" * (-len(entry) % tarfile.BLOCKSIZE)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)   # 31: a gzip member (header mtime 0)
    return c.compress(entry) + c.flush()


def layout(payload: str, path: str, volume_bytes: int) -> Layout:
    """Cut the payload file into volumes of at most ``volume_bytes`` (head included)."""
    if volume_bytes < MIN_VOLUME_BYTES:
        raise VolumeError(f"a volume of {volume_bytes} bytes is too small (at least "
                          f"{MIN_VOLUME_BYTES}).")
    total = os.path.getsize(payload)
    with open(payload, "rb") as f:
        full = _sha256(f, total)
    tag, head_bytes = full[:TAG_HEX], 0
    while True:   # the head's size depends on the cut, which depends on the head's size
        first = min(total, volume_bytes - head_bytes)
        cuts = [(0, first)] + [(o, min(volume_bytes, total - o))
                               for o in range(first, total, volume_bytes)]
        names = [os.path.basename(path)] + [part_name(path, tag, k)
                                            for k in range(2, len(cuts) + 1)]
        with open(payload, "rb") as f:
            hashes = [_sha256(f, n) for _, n in cuts]
        head = _head({"format": FORMAT, "payload_bytes": total, "payload_sha256": full,
                      "volumes": [{"name": nm, "bytes": n, "sha256": h}
                                  for nm, (_, n), h in zip(names, cuts, hashes)]})
        if len(head) <= head_bytes:
            return Layout(head, [(nm, o, n) for nm, (o, n) in zip(names, cuts)])
        head_bytes = len(head)
        if head_bytes >= volume_bytes:
            raise VolumeError(f"a volume of {volume_bytes} bytes cannot hold the manifest.")


def _write_tmp(folder: str, head: bytes, payload: str, offset: int, length: int) -> str:
    """A temporary file in ``folder``: ``head``, then ``length`` bytes of ``payload`` from
    ``offset``, flushed to disk."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_volume_")
    with os.fdopen(fd, "wb") as out, open(payload, "rb") as src:
        out.write(head)
        src.seek(offset)
        while length > 0:
            block = src.read(min(_BLOCK, length))
            out.write(block)
            length -= len(block)
        out.flush()
        os.fsync(out.fileno())
    return tmp


def commit(lay: Layout, payload: str, path: str) -> list[str]:
    """Write the volumes of ``lay`` beside ``path`` (parts first, FILE last, each through a
    temporary and a rename), then remove parts of older sets; returns the paths written."""
    folder = os.path.dirname(os.path.abspath(path))
    written, temps = [], []
    try:
        for name, offset, length in lay.chunks[1:]:
            temps.append(_write_tmp(folder, b"", payload, offset, length))
            os.replace(temps[-1], os.path.join(folder, name))
            written.append(os.path.join(folder, name))
        _, offset, length = lay.chunks[0]
        temps.append(_write_tmp(folder, lay.head, payload, offset, length))
        os.replace(temps[-1], path)
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
    keep = {name for name, _, _ in lay.chunks}
    pattern = _parts_pattern(path)
    for name in os.listdir(folder):
        if pattern.match(name) and name not in keep:
            os.remove(os.path.join(folder, name))
    return [path] + written


def _manifest_header(block: bytes) -> Optional[tarfile.TarInfo]:
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.TarError:
        return None
    return info if info.name == MANIFEST else None


def read_manifest(path: str) -> tuple[Optional[dict], int]:
    """(manifest, bytes of the head) of the first volume; (None, 0) for a plain .tar.gz
    (as written before volumes: the whole file is then the payload)."""
    d, data, used = zlib.decompressobj(31), b"", 0
    try:
        with open(path, "rb") as f:
            while not d.eof:
                block = f.read(64 * 1024)
                if not block:
                    return None, 0
                data += d.decompress(block)
                used += len(block)
                if len(data) >= tarfile.BLOCKSIZE and not _manifest_header(
                        data[:tarfile.BLOCKSIZE]):
                    return None, 0
    except zlib.error:
        return None, 0    # not gzip: reading it as an archive says so
    info = _manifest_header(data[:tarfile.BLOCKSIZE])
    if info is None:
        return None, 0
    try:
        manifest = json.loads(data[tarfile.BLOCKSIZE:tarfile.BLOCKSIZE + info.size])
    except ValueError as err:
        raise VolumeError(f"{path}: its volume manifest is garbled ({err}).") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VolumeError(f"{path}: not a volume manifest of this version of fosc_jax.")
    return manifest, used - len(d.unused_data)


def verify(path: str) -> list[tuple[str, int, int]]:
    """The (file, offset, length) segments of the payload of the set whose first volume is
    ``path``, after checking that every volume is there with the size and SHA-256 that the
    manifest records; VolumeError (one line, naming the volume) otherwise."""
    manifest, head = read_manifest(path)
    if manifest is None:
        return [(path, 0, os.path.getsize(path))]
    folder, vols = os.path.dirname(os.path.abspath(path)), manifest["volumes"]
    segments = []
    for k, vol in enumerate(vols, 1):
        name = vol["name"]
        if k > 1 and (os.path.basename(name) != name or not _parts_pattern(path).match(name)):
            raise VolumeError(f"{path}: its manifest names an unexpected volume {name!r}.")
        file = path if k == 1 else os.path.join(folder, name)
        offset = head if k == 1 else 0
        what = f"the archive {path} is incomplete: its volume {k} of {len(vols)}, {name},"
        if not os.path.isfile(file):
            raise VolumeError(f"{what} is missing (it must lie beside {path}).")
        size = os.path.getsize(file) - offset
        if size != vol["bytes"]:
            raise VolumeError(f"{what} holds {size} bytes, not {vol['bytes']}: truncated or "
                              "from another archive.")
        with open(file, "rb") as f:
            f.seek(offset)
            if _sha256(f, size) != vol["sha256"]:
                raise VolumeError(f"{what} is corrupt (its SHA-256 differs from the manifest).")
        segments.append((file, offset, size))
    return segments


class Joined(io.RawIOBase):
    """The payload segments read as one seekable stream (for tarfile's 'r:gz')."""

    def __init__(self, segments: list[tuple[str, int, int]]):
        super().__init__()
        self._segments, self._pos, self._files = segments, 0, {}
        self._size = sum(n for _, _, n in segments)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        start = 0
        for file, offset, length in self._segments:
            if self._pos < start + length:
                f = self._files.get(file) or self._files.setdefault(file, open(file, "rb"))
                f.seek(offset + self._pos - start)
                n = f.readinto(memoryview(buffer)[:min(len(buffer), start + length - self._pos)])
                self._pos += n
                return n
            start += length
        return 0

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        super().close()
