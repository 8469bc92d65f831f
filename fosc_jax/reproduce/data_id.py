"""Which copy of a data set a reproduction read, told by its content (never by its path).

The offline CIFAR-10 of this project's machines is a lossy JPEG copy (quality about 75), so
its accuracies run a little below published CIFAR-10 figures and RESULTS.md must say so.
"""
from __future__ import annotations

import hashlib

import numpy as np

# SHA-256 over x_train, y_train, x_test, y_test as fosc_jax.data.load_dataset returns them
# (uint8 images [N, 32, 32, 3], int32 labels, in that order, C order) for the JPEG copy of
# CIFAR-10 (cifar10-jpeg.tar.xz of the offline data folder) decoded by its decode.py with
# Pillow 13; computed once from that decode (its arrays' MD5s match the data folder's
# README). Another JPEG decoder may give other pixels, hence the class-sorted fallback below.
JPEG_COPY_SHA256 = "f8e3daeec3ff54723b444ae5c996ae3ca13376ec02290d617a1a83a1e2b49702"
JPEG_COPY = "JPEG copy"
SORTED_COPY = "class-sorted copy"


def content_sha256(ds) -> str:
    """SHA-256 of a Dataset's four arrays (the key of :data:`JPEG_COPY_SHA256`)."""
    h = hashlib.sha256()
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def copy_kind(ds) -> str:
    """"JPEG copy" (the known decode), "class-sorted copy" (training labels in class order,
    as the JPEG copy's decoder writes them and the lossless release never has them, but
    other pixels) or "" (anything else)."""
    if content_sha256(ds) == JPEG_COPY_SHA256:
        return JPEG_COPY
    return SORTED_COPY if bool(np.all(np.diff(ds.y_train) >= 0)) else ""


def data_label(title: str, dataset: str, ds) -> str:
    """The data set in RESULTS.md: "CIFAR-10 (JPEG copy)" for the JPEG copy, else ``title``
    (with the copy's kind where known)."""
    kind = copy_kind(ds) if dataset == "cifar10" else ""
    return f"{title} ({kind})" if kind else title


def data_lines(title: str, dataset: str, ds) -> list[str]:
    """RESULTS.md's sentence on the CIFAR-10 data read (none for other data sets)."""
    if dataset != "cifar10":
        return []
    kind = copy_kind(ds)
    what = {JPEG_COPY: "the JPEG copy of CIFAR-10 (quality about 75): its pixels differ "
                       "slightly from the lossless release, so accuracies run a little below "
                       "published CIFAR-10 figures",
            SORTED_COPY: "a class-sorted copy of CIFAR-10 whose pixels are not the checked "
                         "decode of the JPEG copy (another JPEG decoder?); treat it as lossy",
            "": "CIFAR-10 as given (not the known JPEG copy)"}[kind]
    return [f"Data: {what}; {len(ds.y_train):,} training and {len(ds.y_test):,} test images, "
            f"content SHA-256 {content_sha256(ds)[:16]}.", ""]
