"""Reader for the IDX format of the original MNIST files (optionally gzip-compressed).

Format: 2 zero bytes, a type byte, a rank byte, then ``rank`` big-endian uint32 sizes and
the data in big-endian order. Written here so MNIST loads without any download library.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{os.fspath(path)}: corrupt gzip stream ({e}).") from e


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode one IDX blob into a native-endian numpy array of the stored shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(
            f"{source}: not an IDX file (bad magic number {data[:4].hex() or 'empty'}; expected "
            f"00 00 <type in {sorted(hex(t) for t in _IDX_TYPES)}> <rank>)."
        )
    dtype, rank = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * rank
    if rank == 0 or len(data) < header:
        raise ValueError(f"{source}: corrupt IDX header (rank {rank}, {len(data)} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{source}: IDX size mismatch: header says shape {dims} ({expected} bytes in all) "
            f"but the file has {len(data)} bytes (truncated or corrupt)."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip) from ``path``."""
    return parse_idx(read_bytes(path), source=os.fspath(path))
