"""Paper 000's own protocol, reproduced by name (``split=paper_copies``): offline-augment every image into
``copies`` images (original, mirrored, flipped, translated, mirrored + translated), then split the copies at
random, so copies of one image land on both sides of the split (the paper's 1,065 -> 852 / 213).

This leaks: a test image's mirror or shifted twin is trained on. ferbench's default for the same table is the
leak-free hold-out of the originals; the table shows both. Boxes (detection targets) move with their image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ferbench.data.splits import SPLITS, Fold, carve_val
from ferbench.errors import ConfigError

MAX_SHIFT = 0.1
"""Translation copies move the image by up to this fraction of its side (the paper gives no magnitude)."""


def _mirror(image: np.ndarray, target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    size = image.shape[1]
    out = None if target is None else target.copy()
    if out is not None:
        out[:, [1, 3]] = size - target[:, [3, 1]]
    return image[:, ::-1], out


def _flip(image: np.ndarray, target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    size = image.shape[0]
    out = None if target is None else target.copy()
    if out is not None:
        out[:, [2, 4]] = size - target[:, [4, 2]]
    return image[::-1], out


def _shift(image: np.ndarray, target: np.ndarray | None, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Move by (dx, dy) pixels, edges repeated; boxes moved and clipped to the image."""
    h, w = image.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    out = None if target is None else target.copy()
    if out is not None:
        out[:, [1, 3]] = (target[:, [1, 3]] + dx).clip(0, w)
        out[:, [2, 4]] = (target[:, [2, 4]] + dy).clip(0, h)
    return image[rows][:, cols], out


def augmented_copies(
    image: np.ndarray, target: np.ndarray | None, copies: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The image itself, then mirror, flip, translation, mirror + translation (cycling if ``copies`` > 5)."""
    size = image.shape[0]
    out = [(image, target)]
    for k in range(1, copies):
        kind = (k - 1) % 4
        dx, dy = (int(v) for v in rng.integers(-MAX_SHIFT * size, MAX_SHIFT * size + 1, 2))
        if kind == 0:
            out.append(_mirror(image, target))
        elif kind == 1:
            out.append(_flip(image, target))
        elif kind == 2:
            out.append(_shift(image, target, dx, dy))
        else:
            out.append(_shift(*_mirror(image, target), dx, dy))
    return [(np.ascontiguousarray(i), t) for i, t in out]


def expand_copies(
    samples: pd.DataFrame,
    images: np.ndarray,
    labels: np.ndarray,
    targets: list[np.ndarray] | None,
    copies: int,
    seed: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """Every row ``copies`` times (consecutive), with columns ``copy_of`` (the original's row) and ``copy``."""
    if copies < 1:
        raise ConfigError(f"split.copies must be an integer >= 1, got {copies}")
    rng = np.random.default_rng(seed)
    new_images = np.empty((len(images) * copies, *images.shape[1:]), dtype=images.dtype)
    new_targets: list[np.ndarray] | None = [] if targets is not None else None
    for i in range(len(images)):
        made = augmented_copies(np.asarray(images[i]), None if targets is None else targets[i], copies, rng)
        for k, (image, target) in enumerate(made):
            new_images[i * copies + k] = image
            if new_targets is not None:
                new_targets.append(target)
    expanded = samples.loc[samples.index.repeat(copies)].reset_index(drop=True)
    expanded["copy_of"] = np.repeat(np.arange(len(samples)), copies)
    expanded["copy"] = np.tile(np.arange(copies), len(samples))
    return expanded, new_images, np.repeat(labels, copies), new_targets


@SPLITS.register("paper_copies")
def paper_copies_split(
    samples: pd.DataFrame, seed: int, ratio: float = 0.2, copies: int = 5, val_ratio: float = 0.1
) -> list[Fold]:
    """A random (unstratified, ungrouped) hold-out over the copies, as paper 000 split its 1,065 images."""
    if "copy_of" not in samples or samples["copy"].max() + 1 != copies:
        raise ConfigError("split=paper_copies needs the copies made first (run.py expands by split.copies)")
    index = np.arange(len(samples))
    train, test = train_test_split(index, test_size=ratio, random_state=seed)
    tr, va = carve_val(train, samples["label"].to_numpy(), val_ratio, seed)
    return [Fold(0, tr, va, np.sort(test))]
