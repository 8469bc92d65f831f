"""Reader for the CIFAR-10 binary release (data_batch_1..5.bin, test_batch.bin).

Each record is 1 label byte followed by 3072 pixel bytes in CHW order (1024 R, 1024 G,
1024 B, rows of 32). Images are returned HWC.
"""

from __future__ import annotations

import os

import numpy as np

IMAGE_BYTES: int = 3 * 32 * 32
RECORD_BYTES: int = 1 + IMAGE_BYTES
NUM_CLASSES: int = 10


def parse_cifar_records(data: bytes, *, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Decode concatenated records into (images uint8 [N,32,32,3], labels int32 [N])."""
    if len(data) == 0 or len(data) % RECORD_BYTES != 0:
        raise ValueError(
            f"{source}: {len(data)} bytes is not a whole number of CIFAR-10 records of "
            f"{RECORD_BYTES} bytes (1 label + 3072 pixels); the file is truncated or not CIFAR-10."
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int32)
    if labels.max() >= NUM_CLASSES:
        raise ValueError(f"{source}: label byte {labels.max()} >= {NUM_CLASSES}; not a "
                         "CIFAR-10 binary file (CIFAR-100 records have 2 label bytes).")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar_batches(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate several CIFAR-10 binary batch files, in the given order."""
    parts = []
    for path in paths:
        with open(path, "rb") as f:
            parts.append(parse_cifar_records(f.read(), source=os.fspath(path)))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
