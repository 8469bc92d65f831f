"""The in-memory dataset record every loader returns."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test split as host numpy arrays: images uint8 [N, H, W, C], labels int32 [N].

    ``__post_init__`` checks dtypes, ranks, matching lengths and label range so that a
    malformed source fails here rather than deep inside a jitted training step.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
            raise ValueError(f"Dataset {self.name!r}: num_classes must be a positive int, "
                             f"got {self.num_classes!r}.")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
                raise ValueError(
                    f"Dataset {self.name!r}: x_{split} must be a uint8 numpy array [N, H, W, C], "
                    f"got {type(x).__name__} {getattr(x, 'dtype', None)} "
                    f"{getattr(x, 'shape', None)}; "
                    "add a channel axis with x[..., None] for grayscale images."
                )
            if not isinstance(y, np.ndarray) or y.dtype != np.int32 or y.ndim != 1:
                raise ValueError(
                    f"Dataset {self.name!r}: y_{split} must be an int32 numpy array [N], "
                    f"got {type(y).__name__} {getattr(y, 'dtype', None)} "
                    f"{getattr(y, 'shape', None)}."
                )
            if len(x) != len(y):
                raise ValueError(f"Dataset {self.name!r}: x_{split} has {len(x)} images but "
                                 f"y_{split} has {len(y)} labels.")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"Dataset {self.name!r}: y_{split} labels must lie in [0, {self.num_classes}), "
                    f"got range [{y.min()}, {y.max()}]."
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"Dataset {self.name!r}: train images {self.x_train.shape[1:]} and "
                             f"test images {self.x_test.shape[1:]} differ in shape.")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]
