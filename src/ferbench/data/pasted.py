"""Real faces pasted into larger canvases at known boxes: a detection set of real expressions built from one we hold.

Paper 000 detects expressions in JAFFE's whole frames, which this project does not have. ``data=pasted_ckplus``
(or ``pasted_fer2013``) takes every face of a data set we hold (CK+48's posed grey faces, like JAFFE's) and pastes
it, resized to a random side between ``min_scale`` and ``max_scale`` of the canvas, at a random place on a plain
or textured background. Labels, subjects, sequences and official splits are the source's, so every split protocol
(``subject_kfold`` included) works as on the source; the box of each face is exact (``DataSource.boxes``), so the
detector is measured against the truth, not against a face finder.

The canvases are drawn in memory from the source images and ``seed``: the same source files and settings give the
same pixels, the same fingerprint and so the same run ids on every machine; nothing is written beside the data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ferbench.data.base import DATASETS, DataSource
from ferbench.errors import ConfigError

Background = Literal["plain", "texture"]


def paste(face: np.ndarray, canvas: int, rng: np.random.Generator, scales: tuple[float, float], background: str):
    """``face`` (grey, H x W) resized to a random square side and pasted on a ``canvas`` x ``canvas`` background;
    returns the canvas and the box (x1, y1, x2, y2) as fractions of the canvas."""
    side = int(round(canvas * rng.uniform(*scales)))
    x, y = (int(v) for v in rng.integers(0, canvas - side + 1, 2))
    image = _background(canvas, rng, background)
    image[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return image, np.array([[x, y, x + side, y + side]], dtype=np.float64) / canvas


def _background(canvas: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    """A grey level (``plain``), or smooth random blobs with fine noise (``texture``): clutter without faces."""
    level = float(rng.uniform(40, 200))
    if kind == "plain":
        return np.full((canvas, canvas), level, dtype=np.uint8)
    coarse = rng.normal(0.0, 45.0, (8, 8)).astype(np.float32)
    blobs = cv2.resize(coarse, (canvas, canvas), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0.0, 8.0, (canvas, canvas)).astype(np.float32)
    return np.clip(level + blobs + fine, 0, 255).astype(np.uint8)


@DATASETS.register("pasted")
def load_pasted(
    root: Path,
    source: str = "ckplus",
    canvas: int = 256,
    min_scale: float = 0.3,
    max_scale: float = 0.7,
    background: Background = "texture",
    seed: int = 0,
    source_options: dict | None = None,
) -> DataSource:
    """``source`` (a registered data set, read from ``root`` with ``source_options``) pasted into canvases."""
    if not 0 < min_scale <= max_scale <= 1:
        raise ConfigError(f"data.options: need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
    if background not in ("plain", "texture"):
        raise ConfigError(f"data.options.background must be plain or texture, got {background!r}")
    if canvas < 32:
        raise ConfigError(f"data.options.canvas must be at least 32 pixels, got {canvas}")
    faces = DATASETS.get(source)(root, **(source_options or {}))
    if faces.whole_frames:
        raise ConfigError(f"data.options.source={source}: its images are whole frames, not faces; use CK+48's layout")
    rng = np.random.default_rng(seed)
    pixels = np.empty((len(faces), canvas, canvas), dtype=np.uint8)
    boxes = []
    for i in range(len(faces)):
        face = faces.read_image(i)
        grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
        pixels[i], box = paste(grey, canvas, rng, (min_scale, max_scale), background)
        boxes.append(box)
    settings = [faces.fingerprint, canvas, min_scale, max_scale, background, seed]
    fingerprint = "pasted-" + hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:16]
    return DataSource(
        f"pasted_{faces.name}",
        list(faces.classes),
        faces.samples.copy(),
        pixels=pixels,
        skipped=dict(faces.skipped),
        fingerprint=fingerprint,
        boxes=boxes,
    )
