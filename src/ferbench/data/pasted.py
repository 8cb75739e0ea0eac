"""Real faces pasted into larger canvases at known boxes: a detection set of real expressions built from one we hold.

Paper 000 detects expressions in JAFFE's whole frames, which this project does not have. ``data=pasted_ckplus``
(or ``pasted_fer2013``) takes every face of a data set we hold (CK+48's posed grey faces, like JAFFE's) and pastes
it, resized to a random side between ``min_scale`` and ``max_scale`` of the canvas, at a random place on a plain
or textured background. Labels, subjects, sequences and official splits are the source's, so every split protocol
(``subject_kfold`` included) works as on the source; the box of each face is exact (``DataSource.boxes``), so the
detector is measured against the truth, not against a face finder.

Closer to JAFFE (``data=pasted_jaffe_like``): ``boxes=face_finder`` leaves the boxes to the Haar cascade that makes
JAFFE's (``data.boxes``: largest face kept, whole canvas where none is found, both counted in the record), so the
detector learns and is scored on the finder's looser boxes, as on JAFFE; ``subjects`` keeps that many people, drawn
from ``seed``, and ``images`` sets the number of canvases (each face pasted again, at another place and size, until
there are that many), JAFFE's 213 images of 10 people instead of CK+'s 981 of 118. Left at None (and ``exact``)
they change nothing, not even the fingerprint, so the existing configs keep their run ids.

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
import pandas as pd

from ferbench.data.base import DATASETS, DataSource
from ferbench.errors import ConfigError

Background = Literal["plain", "texture"]
BoxSource = Literal["exact", "face_finder"]


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


def pick_faces(samples: pd.DataFrame, rng: np.random.Generator, subjects: int | None, images: int | None) -> np.ndarray:
    """Rows of ``samples`` to paste, in order (a row twice where a face is pasted twice): every face by default;
    else the faces of ``subjects`` people drawn from ``rng``, then repeated or thinned to ``images`` canvases."""
    rows = np.arange(len(samples))
    if subjects is not None:
        people = sorted(samples["subject"].dropna().unique())
        if not 1 <= subjects <= len(people):
            raise ConfigError(f"data.options.subjects={subjects}: the source has {len(people)} subjects with a name")
        chosen = rng.choice(people, subjects, replace=False)
        rows = rows[samples["subject"].isin(chosen).to_numpy()]
    if images is not None:
        if images < 1:
            raise ConfigError(f"data.options.images must be at least 1, got {images}")
        rounds, rest = divmod(images, len(rows))
        rows = np.sort(np.concatenate([np.tile(rows, rounds), rng.choice(rows, rest, replace=False)]), kind="stable")
    return rows


def pasted_table(samples: pd.DataFrame, rows: np.ndarray, repeated: bool) -> pd.DataFrame:
    """The source's rows as pasted; where faces may be pasted more than once, ``paste`` numbers each face's copies
    (the same face's copies share its subject and sequence, so a subject split keeps them together)."""
    table = samples.iloc[rows].reset_index(drop=True)
    if repeated:
        table["paste"] = pd.Series(rows).groupby(rows).cumcount().to_numpy()
    return table


def check_options(canvas: int, min_scale: float, max_scale: float, background: str, boxes: str) -> None:
    """A bad option is a one-line ConfigError naming it, before CK+ or FER2013 is read."""
    if not 0 < min_scale <= max_scale <= 1:
        raise ConfigError(f"data.options: need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
    if background not in ("plain", "texture"):
        raise ConfigError(f"data.options.background must be plain or texture, got {background!r}")
    if boxes not in ("exact", "face_finder"):
        raise ConfigError(f"data.options.boxes must be exact or face_finder, got {boxes!r}")
    if canvas < 32:
        raise ConfigError(f"data.options.canvas must be at least 32 pixels, got {canvas}")


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
    boxes: BoxSource = "exact",
    subjects: int | None = None,
    images: int | None = None,
) -> DataSource:
    """``source`` (a registered data set, read from ``root`` with ``source_options``) pasted into canvases."""
    check_options(canvas, min_scale, max_scale, background, boxes)
    faces = DATASETS.get(source)(root, **(source_options or {}))
    if faces.whole_frames:
        raise ConfigError(f"data.options.source={source}: its images are whole frames, not faces; use CK+48's layout")
    rng = np.random.default_rng(seed)
    rows = pick_faces(faces.samples, rng, subjects, images)
    pixels = np.empty((len(rows), canvas, canvas), dtype=np.uint8)
    placed = []
    for k, i in enumerate(rows):
        face = faces.read_image(int(i))
        grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
        pixels[k], box = paste(grey, canvas, rng, (min_scale, max_scale), background)
        placed.append(box)
    added = {"boxes": boxes, "subjects": subjects, "images": images}
    added = {key: value for key, value in added.items() if value not in ("exact", None)}
    settings = [faces.fingerprint, canvas, min_scale, max_scale, background, seed, *([added] if added else [])]
    fingerprint = "pasted-" + hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:16]
    skipped = dict(faces.skipped)
    if left_out := len(faces) - len(np.unique(rows)):
        skipped["faces_not_pasted"] = left_out
    return DataSource(
        f"pasted_{faces.name}",
        list(faces.classes),
        pasted_table(faces.samples, rows, images is not None),
        pixels=pixels,
        skipped=skipped,
        fingerprint=fingerprint,
        boxes=placed if boxes == "exact" else None,  # None: the face finder boxes each canvas, as JAFFE's images
    )


def finder_looseness(root: Path, **options) -> dict[str, float]:
    """How far the face finder's boxes (``boxes=face_finder``) sit from the exact paste boxes on the same canvases:
    what the detector is trained and scored against on the JAFFE-like stand-in, measured without training."""
    from torchvision.ops import box_iou

    from ferbench.data.boxes import haar_boxes

    exact = load_pasted(root, **{**options, "boxes": "exact"})
    found = haar_boxes(exact, np.arange(len(exact)))
    pairs = list(zip(found.boxes, exact.boxes, strict=True))
    ious = np.array([float(box_iou(_tensor(f), _tensor(e))[0, 0]) for f, e in pairs])
    area = np.array([_area(f) / _area(e) for f, e in pairs])
    return {
        "canvases": len(exact),
        "subjects": int(exact.samples["subject"].nunique()),
        "faces": int(exact.samples["path"].nunique()),
        "mean_iou": float(ious.mean()),
        "share_iou_below_0.5": float((ious < 0.5).mean()),
        "median_area_ratio": float(np.median(area)),
        **{key: int(value) for key, value in found.counts.items()},
    }


def _tensor(box: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(box, dtype=np.float64).reshape(-1, 4))


def _area(box: np.ndarray) -> float:
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64).reshape(-1, 4)[0]
    return (x2 - x1) * (y2 - y1)
