"""``fer2013``: the original ``fer2013.csv`` (pixels held in memory) or the ``train|test/<class>/`` folders.

In the folder layout the file-name prefix (``Training_``, ``PublicTest_``, ``PrivateTest_``) carries the
csv's Usage column, so the official train / val / test split survives; a file without a prefix takes its
top folder's split (train or test).
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ferbench.data.base import (
    DATASETS,
    DataSource,
    Layout,
    pick_layout,
    require_dir,
    sample_table,
    tree_fingerprint,
)
from ferbench.data.folder import scan_class_tree
from ferbench.errors import DataError

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
"""Sorted, as the folder layout (and ``synthetic``) has them; both layouts give the same label numbers."""
CSV_CODES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
"""The csv's emotion column: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral."""
CODE_TO_LABEL = np.array([CLASSES.index(c) for c in CSV_CODES], dtype=np.int64)
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIDE = 48
CSV_LAYOUT = "<root>/fer2013.csv (columns emotion, pixels, Usage)"
FOLDER_LAYOUT = "<root>/train/<class>/Training_*.jpg and <root>/test/<class>/{PublicTest,PrivateTest}_*.jpg"


@dataclass
class Fer2013Csv:
    """The parsed ``fer2013.csv``: one entry per data row, in file order."""

    labels: np.ndarray  # int64, index into CLASSES (the csv's emotion code already mapped)
    usage: list[str]  # 'train' / 'val' / 'test'
    pixels: np.ndarray  # uint8 N x 48 x 48


def read_fer2013_csv(path: Path) -> Fer2013Csv:
    """Parse and validate every row; a malformed one raises DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path} (expected layout: {CSV_LAYOUT})")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("emotion", "pixels", "Usage") if c not in header]
        if missing:
            raise DataError(f"{path}:1: header {header} lacks columns {missing}")
        ie, ip, iu = (header.index(c) for c in ("emotion", "pixels", "Usage"))
        labels, usage, blobs = [], [], []
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: expected {len(header)} fields ({', '.join(header)}), found {len(row)}")
            try:
                label = int(row[ie])
            except ValueError:
                raise DataError(f"{path}:{line}: emotion {row[ie]!r} is not an integer 0..6") from None
            if not 0 <= label < len(CLASSES):
                raise DataError(f"{path}:{line}: unknown emotion {label}; expected 0..6 ({', '.join(CSV_CODES)})")
            if row[iu].strip() not in USAGE:
                raise DataError(f"{path}:{line}: unknown Usage {row[iu]!r}; expected one of {list(USAGE)}")
            labels.append(label)
            usage.append(USAGE[row[iu].strip()])
            blobs.append((line, row[ip]))
    if not labels:
        raise DataError(f"{path}: no data rows")
    return Fer2013Csv(CODE_TO_LABEL[np.asarray(labels, dtype=np.int64)], usage, _parse_pixels(path, blobs))


def _parse_pixels(path: Path, blobs: list[tuple[int, str]]) -> np.ndarray:
    """All pixel strings in one C-speed parse; on any problem, find and name the first bad line."""
    n = SIDE * SIDE
    for line, blob in blobs:  # cheap token count per row first: names the line of a wrong count
        if blob.count(" ") + 1 != n or not blob.strip():
            count = len(blob.split())
            if count != n:
                raise DataError(f"{path}:{line}: pixels holds {count} values; expected {n} (48x48)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            flat = np.fromstring(" ".join(b for _, b in blobs), dtype=np.int64, sep=" ")
        except ValueError:  # a token that is not a number: the loop below names its line
            flat = np.empty(0, dtype=np.int64)
    if flat.size != n * len(blobs) or flat.min(initial=0) < 0 or flat.max(initial=0) > 255:
        for line, blob in blobs:
            try:
                values = np.array(blob.split(), dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}:{line}: pixels must be integers 0..255") from None
            if values.size != n or values.min() < 0 or values.max() > 255:
                raise DataError(f"{path}:{line}: pixels must be {n} integers 0..255")
    return flat.astype(np.uint8).reshape(len(blobs), SIDE, SIDE)


def _usage_of(path: Path, top_split: str) -> str:
    prefix = path.name.split("_", 1)[0]
    return USAGE.get(prefix, top_split)


def load_fer2013_csv(root: Path) -> DataSource:
    root = require_dir(root, CSV_LAYOUT)
    path = root / "fer2013.csv"
    parsed = read_fer2013_csv(path)
    samples = sample_table(
        {"label": y, "official_split": s, "row": i}
        for i, (y, s) in enumerate(zip(parsed.labels, parsed.usage, strict=True))
    )
    return DataSource("fer2013", list(CLASSES), samples, parsed.pixels, fingerprint=tree_fingerprint([path]))


def load_fer2013_folders(root: Path) -> DataSource:
    root = require_dir(root, FOLDER_LAYOUT)
    rows, skipped = [], Counter()
    for top in ("train", "test"):
        folder = root / top
        if not folder.is_dir():
            raise DataError(f"folder not found: {folder.resolve()} (expected layout: {FOLDER_LAYOUT})")
        tree = scan_class_tree(folder, CLASSES)
        skipped.update(tree.skipped)
        rows += [
            {"path": str(p), "label": CLASSES.index(c), "official_split": _usage_of(p, top)} for p, c in tree.files
        ]
    paths = [Path(r["path"]) for r in rows]
    return DataSource(
        "fer2013", list(CLASSES), sample_table(rows), skipped=dict(skipped), fingerprint=tree_fingerprint(paths)
    )


LAYOUTS = (Layout("csv", "fer2013.csv", CSV_LAYOUT), Layout("folders", "train", FOLDER_LAYOUT))


@DATASETS.register("fer2013")
def load_fer2013(root: Path, layout: Literal["auto", "csv", "folders"] = "auto") -> DataSource:
    """``layout=auto``: the csv when ``<root>/fer2013.csv`` exists, else the folders."""
    root = Path(root)
    chosen = pick_layout("FER2013", "fer2013", root, layout, LAYOUTS)
    return load_fer2013_csv(root) if chosen == "csv" else load_fer2013_folders(root)
