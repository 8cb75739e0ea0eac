"""Turn a DataSource into one uint8 array N x H x W x C at the model's size and channel count."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ferbench.data.base import DataSource
from ferbench.errors import DataError


@dataclass
class PreparedImages:
    images: np.ndarray
    """uint8, N x H x W x C, row i is the i-th *kept* sample of the source."""
    keep: np.ndarray
    """bool per source row: False where the image was skipped (corrupt, with ``skip_corrupt``)."""
    skipped: dict[str, int] = field(default_factory=dict)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grey <-> RGB as the model needs; always returns H x W x C."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.repeat(image, 3, axis=2)


def prepare_image(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)
    return to_channels(resized, channels)


def prepare_images(
    source: DataSource,
    size: int,
    channels: int,
    *,
    face_crop: bool = False,
    equalize: bool = False,
    skip_corrupt: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> PreparedImages:
    """Decode, convert and resize every image once."""
    out = np.empty((len(source), size, size, channels), dtype=np.uint8)
    keep = np.ones(len(source), dtype=bool)
    skipped: dict[str, int] = {}
    for i in range(len(source)):
        try:
            out[i] = prepare_image(source.read_image(i), size, channels)
        except DataError:
            if not skip_corrupt:
                raise
            keep[i] = False
            skipped["corrupt_images"] = skipped.get("corrupt_images", 0) + 1
    return PreparedImages(out[keep], keep, skipped)
