"""Data: host-side loaders (``load_dataset`` -> ``Dataset``) and the on-device pipeline."""

from fosc_jax.data.dataset import Dataset
from fosc_jax.data.pipeline import (
    AUGMENT_NAMES,
    augment_cifar,
    augment_none,
    crop_and_flip,
    epoch_permutation,
    get_augment,
    to_float,
)
from fosc_jax.data.sources import KNOWN_DATASETS, load_dataset

__all__ = [
    "AUGMENT_NAMES",
    "Dataset",
    "KNOWN_DATASETS",
    "augment_cifar",
    "augment_none",
    "crop_and_flip",
    "epoch_permutation",
    "get_augment",
    "load_dataset",
    "to_float",
]
