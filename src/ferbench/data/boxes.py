"""Face boxes for detection: the Haar cascade the preprocessing already uses, or a user's CSV (``data.boxes``).

Face data sets (JAFFE, CK+, RaFD) come without boxes. Each image gets the boxes the frontal-face cascade finds
(same detector and settings as ``face_crop``); where it finds none the whole image is the box, where it finds
several the largest is kept; the counts go into the run record (``skipped``) so a reader sees what was done.
A CSV instead gives ``path,x1,y1,x2,y2`` in the original image's pixels, one row per face; ``path`` is matched
against the end of each sample's path (a file name is enough where names are unique). Every box carries its
image's expression label.

Boxes are stored as fractions of the image's width and height, so one cache entry serves any input size:
``<cache_dir>/boxes-<key>.json`` (key: data set, its files, its rows, the box source, ``BOXES_VERSION``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ferbench.data.base import DataSource
from ferbench.data.preprocess import HAAR_CASCADE
from ferbench.errors import DataError
from ferbench.records.atomic import write_text

BOXES_VERSION = 1
CSV_COLUMNS = ("path", "x1", "y1", "x2", "y2")


@dataclass
class FaceBoxes:
    """Per kept sample: an (K, 4) float array of x1, y1, x2, y2 as fractions of the image's width and height."""

    boxes: list[np.ndarray]
    counts: dict[str, int] = field(default_factory=dict)
    """What was done where the source gave no single face (e.g. ``no_face_box_whole_image``)."""

    def targets(self, labels: np.ndarray, size: int) -> list[np.ndarray]:
        """Per image an (K, 5) float32 array: class, x1, y1, x2, y2 in pixels of a ``size`` x ``size`` input."""
        return [
            np.concatenate([np.full((len(b), 1), label), b * size], axis=1).astype(np.float32)
            for b, label in zip(self.boxes, labels, strict=True)
        ]


def haar_faces(image: np.ndarray, cascade: cv2.CascadeClassifier) -> np.ndarray:
    """(K, 4) x, y, w, h of the frontal faces in ``image`` (the settings of ``preprocess.FaceCropper``)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    side = min(grey.shape[:2])
    faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(max(20, side // 5),) * 2)
    return np.asarray(faces, dtype=np.float64).reshape(-1, 4)


def haar_boxes(source: DataSource, rows: np.ndarray) -> FaceBoxes:
    """One box per image: the largest face found, or the whole image where none is found."""
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / HAAR_CASCADE))
    if cascade.empty():
        raise DataError(f"OpenCV's face cascade is missing: {Path(cv2.data.haarcascades) / HAAR_CASCADE}")
    boxes, counts = [], {"no_face_box_whole_image": 0, "several_faces_kept_largest": 0}
    for i in rows:
        image = source.read_image(int(i))
        h, w = image.shape[:2]
        faces = haar_faces(image, cascade)
        if len(faces) == 0:
            counts["no_face_box_whole_image"] += 1
            boxes.append(np.array([[0.0, 0.0, 1.0, 1.0]]))
            continue
        if len(faces) > 1:
            counts["several_faces_kept_largest"] += 1
        x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
        boxes.append(np.array([[x / w, y / h, (x + fw) / w, (y + fh) / h]]))
    return FaceBoxes(boxes, counts)


def csv_path(raw: str) -> str:
    """A CSV path as the samples' paths are written: ``find .`` prints ``./happy/x.jpg``, Windows ``happy\\x.jpg``."""
    path = posixpath.normpath(raw.strip().replace("\\", "/")).lstrip("/")
    while path.startswith("../"):  # above the data root: only the part below it can match a sample
        path = path[3:]
    return path


def read_box_csv(path: Path) -> pd.DataFrame:
    """The CSV's rows with normalised paths and float coordinates; a row whose box is not four numbers is an error."""
    try:
        table = pd.read_csv(path, skip_blank_lines=False, dtype={"path": str})
    except (OSError, ValueError) as exc:
        raise DataError(f"data.boxes: cannot read {path}: {exc}") from None
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"data.boxes: {path} lacks columns {missing} (expected {', '.join(CSV_COLUMNS)})")
    table = table[list(CSV_COLUMNS)].dropna(how="all")  # blank lines, kept until now so the index counts lines
    coords = table[list(CSV_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1) | ~np.isfinite(coords.to_numpy(dtype=np.float64)).all(axis=1)
    bad |= table["path"].isna()
    if bad.any():
        i = bad.to_numpy().argmax()
        line, row = int(table.index[i]) + 2, table.iloc[i]  # + the header, counted from 1
        raise DataError(
            f"data.boxes: {path} line {line}: expected a path and four finite numbers x1,y1,x2,y2, got "
            f"{','.join(str(v) for v in row.tolist())}"
        )
    table[list(CSV_COLUMNS[1:])] = coords
    table["path"] = table["path"].astype(str).map(csv_path)
    return table


def csv_boxes(source: DataSource, rows: np.ndarray, csv: Path) -> FaceBoxes:
    """Boxes from a CSV matched on the end of each sample's path; an image without a row has no face box."""
    table = read_box_csv(csv)
    by_path = {p: g[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64) for p, g in table.groupby("path")}
    boxes, counts = [], {"no_box_in_csv": 0}
    for i in rows:
        parts = Path(str(source.samples.at[int(i), "path"])).parts
        found = next((by_path[k] for n in range(1, len(parts) + 1) if (k := "/".join(parts[-n:])) in by_path), None)
        if found is None:
            counts["no_box_in_csv"] += 1
            boxes.append(np.zeros((0, 4)))
            continue
        h, w = source.read_image(int(i)).shape[:2]
        bad = (found[:, 2] <= found[:, 0]) | (found[:, 3] <= found[:, 1])
        if bad.any():
            raise DataError(f"data.boxes: {csv} has an empty box (x2 <= x1 or y2 <= y1) for {parts[-1]}")
        boxes.append(np.clip(found / [w, h, w, h], 0.0, 1.0))
    if len(rows) and counts["no_box_in_csv"] == len(rows):
        raise DataError(
            f"data.boxes: no row of {csv} matches an image of the data set (its first path: "
            f"{table['path'].iloc[0] if len(table) else 'none'}; an image's path: "
            f"{source.samples.at[int(rows[0]), 'path']}); write paths relative to data.root"
        )
    return FaceBoxes(boxes, counts)


def boxes_key(source: DataSource, csv: Path | None) -> str:
    rows = source.samples[["path", "label"]].astype(str)
    table_hash = hashlib.sha1(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()
    origin = "haar" if csv is None else f"csv:{csv.resolve()}:{csv.stat().st_mtime_ns}:{csv.stat().st_size}"
    settings = [source.name, source.fingerprint, table_hash, origin, BOXES_VERSION]
    return hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:20]


def face_boxes(
    source: DataSource, keep: np.ndarray, cache_dir: Path | None = None, csv: Path | None = None
) -> FaceBoxes:
    """Boxes of the kept samples (``keep`` as ``PreparedImages.keep``), cached beside the prepared images."""
    if source.boxes is not None and csv is None:  # the loader drew the faces where it says
        return FaceBoxes([np.asarray(source.boxes[i], dtype=np.float64).reshape(-1, 4) for i in np.flatnonzero(keep)])
    csv = Path(csv) if csv else None
    if csv is not None and not csv.is_file():
        raise DataError(f"data.boxes: no such file {csv}")
    rows = np.flatnonzero(keep)
    path = Path(cache_dir) / f"boxes-{source.name}-{boxes_key(source, csv)}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            stored = json.loads(path.read_text())
            if len(stored["boxes"]) == len(rows):
                return FaceBoxes(
                    [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in stored["boxes"]], stored["counts"]
                )
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is rebuilt
    result = haar_boxes(source, rows) if csv is None else csv_boxes(source, rows, csv)
    if path is not None:
        write_text(path, json.dumps({"boxes": [b.tolist() for b in result.boxes], "counts": result.counts}))
    return result
