"""``ferplus``: FER2013's images relabelled by 10 annotators each (Microsoft's FERPlus).

Labels follow FERPlus's own ``majority`` mode (``src/ferplus.py``, ``_process_data``): votes of 1 are
dropped as outliers, then the top emotion must hold *more than half* of the remaining votes; otherwise
the image is dropped (``no_majority``: every tie lands here, since a tied top can never exceed half).
An image whose winner is ``unknown`` or ``NF`` (not a face) is dropped too. ``vote=plurality`` is the
looser rule many papers use: the single most-voted emotion, ties dropped (``tied_votes``). Every drop
is counted in ``skipped``.

Layouts: ``csv`` is ``fer2013new.csv`` row-aligned with ``fer2013.csv`` (which holds the pixels);
``folders`` is ``FER2013{Train,Valid,Test}/`` with ``fer<n>.png`` and a header-less ``label.csv``
(``name,"(0, 0, 48, 48)",<10 votes>``), as FERPlus's ``generate_training_data.py`` writes them.
Known quirks of the published csv: 173 rows have no image name (FERPlus made no image for them:
``no_image_name``); 4 names appear twice (FERPlus's generator overwrote the file, its label.csv keeps
the first row: here the first row is kept, the later ones counted as ``duplicate_name``); one row holds
9 votes instead of 10 (kept: the rule works on proportions).
"""

from __future__ import annotations

import csv
from collections import Counter
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
from ferbench.data.fer2013 import read_fer2013_csv
from ferbench.data.folder import is_image
from ferbench.errors import ConfigError, DataError

VOTE_COLUMNS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
CLASSES = VOTE_COLUMNS[:8]
"""FERPlus's own order (its vote columns); ``drop_classes: [contempt]`` gives amdcnn's 7."""
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
CSV_LAYOUT = "<root>/fer2013new.csv with the pixels of fer2013.csv"
FOLDER_LAYOUT = "<root>/FER2013Train|FER2013Valid|FER2013Test/ with fer*.png and label.csv"
VoteRule = Literal["majority", "plurality"]


def vote_labels(votes: np.ndarray, rule: VoteRule = "majority") -> tuple[np.ndarray, np.ndarray]:
    """N x 10 vote counts -> (label 0..7 or -1, reason per row: '' when kept, else why it was dropped)."""
    votes = np.asarray(votes, dtype=np.float64)
    if rule == "majority":
        kept = np.where(votes > 1, votes, 0.0)  # FERPlus: a single vote is an outlier
        top = kept.max(axis=1)
        winner = kept.argmax(axis=1)
        decided = (top > 0.5 * kept.sum(axis=1)) & (top > 0)
        undecided_reason = "no_majority"
    elif rule == "plurality":
        top = votes.max(axis=1)
        winner = votes.argmax(axis=1)
        decided = ((votes == top[:, None]).sum(axis=1) == 1) & (top > 0)
        undecided_reason = "tied_votes"
    else:
        raise ConfigError(f"data.options.vote={rule!r} for ferplus; expected majority or plurality")
    reason = np.full(len(votes), "", dtype=object)
    reason[~decided] = undecided_reason
    reason[decided & (winner == 8)] = "majority_unknown"
    reason[decided & (winner == 9)] = "majority_not_face"
    label = np.where(reason == "", winner, -1).astype(np.int64)
    return label, reason


def _votes(path: Path, line: int, fields: list[str]) -> list[int]:
    try:
        votes = [int(float(v)) for v in fields]
    except ValueError:
        raise DataError(f"{path}:{line}: vote counts must be integers, found {fields}") from None
    if any(v < 0 for v in votes) or any(float(v) != float(f) for v, f in zip(votes, fields, strict=True)):
        raise DataError(f"{path}:{line}: vote counts must be non-negative integers, found {fields}")
    return votes


def read_fer2013new(path: Path) -> list[tuple[int, str, str, list[int]]]:
    """(line, usage, image name, 10 votes) per data row of ``fer2013new.csv``."""
    if not path.is_file():
        raise DataError(f"file not found: {path} (expected layout: {CSV_LAYOUT})")
    rows = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["Usage", "Image name"] or header[2:] != VOTE_COLUMNS:
            raise DataError(f"{path}:1: header {header}; expected Usage, Image name, {', '.join(VOTE_COLUMNS)}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 12:
                raise DataError(f"{path}:{line}: expected 12 fields (Usage, Image name, 10 votes), found {len(row)}")
            if row[0].strip() not in USAGE:
                raise DataError(f"{path}:{line}: unknown Usage {row[0]!r}; expected one of {list(USAGE)}")
            rows.append((line, USAGE[row[0].strip()], row[1].strip(), _votes(path, line, row[2:])))
    return rows


def _build(rows: list[dict], votes: list[list[int]], rule: VoteRule, skipped: Counter) -> tuple[np.ndarray, object]:
    """Vote, count the drops, and return (kept mask, sample table of the kept rows)."""
    label, reason = vote_labels(np.asarray(votes).reshape(-1, 10), rule)
    skipped.update(r for r in reason if r)
    keep = label >= 0
    kept_rows = []
    for row, y, v, k in zip(rows, label, votes, keep, strict=True):
        if k:
            kept_rows.append(
                {**row, "label": int(y), **{f"votes_{c}": n for c, n in zip(VOTE_COLUMNS, v, strict=True)}}
            )
    return keep, sample_table(kept_rows) if kept_rows else sample_table([{"label": 0}]).iloc[:0]


def load_ferplus_csv(root: Path, rule: VoteRule, fer2013_csv: Path | None) -> DataSource:
    root = require_dir(root, CSV_LAYOUT)
    new_path = root / "fer2013new.csv"
    entries = read_fer2013new(new_path)
    pixel_path = Path(fer2013_csv) if fer2013_csv else _find_fer2013_csv(root)
    fer = read_fer2013_csv(pixel_path)
    if len(fer.usage) != len(entries):
        raise DataError(
            f"{new_path} has {len(entries)} rows but {pixel_path} has {len(fer.usage)}; they must be row-aligned"
        )
    skipped, seen, rows, votes, index = Counter(), set(), [], [], []
    for i, (line, usage, name, v) in enumerate(entries):
        if usage != fer.usage[i]:
            raise DataError(f"{new_path}:{line}: Usage {usage} but {pixel_path} row {i + 1} says {fer.usage[i]}")
        if not name:
            skipped["no_image_name"] += 1
            continue
        if name in seen:
            skipped["duplicate_name"] += 1
            continue
        seen.add(name)
        rows.append({"official_split": usage, "name": name, "row": i})
        votes.append(v)
        index.append(i)
    keep, samples = _build(rows, votes, rule, skipped)
    pixels = fer.pixels[np.asarray(index, dtype=np.int64)[keep]]
    fingerprint = tree_fingerprint([new_path, pixel_path]) + f"-{rule}"
    return DataSource("ferplus", list(CLASSES), samples, pixels, dict(skipped), fingerprint)


def _find_fer2013_csv(root: Path) -> Path:
    for candidate in (root / "fer2013.csv", root.parent / "fer2013" / "fer2013.csv"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"FERPlus csv layout needs FER2013's pixels: no fer2013.csv in {root.resolve()}"
        f" or {(root.parent / 'fer2013').resolve()} (or set data.options.fer2013_csv)"
    )


def _read_label_csv(folder: Path, split: str) -> tuple[list[dict], list[list[int]], Counter]:
    path = folder / "label.csv"
    if not path.is_file():
        raise DataError(f"file not found: {path} (expected layout: {FOLDER_LAYOUT})")
    rows, votes, skipped, seen = [], [], Counter(), set()
    with path.open(newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) not in (11, 12):
                raise DataError(f"{path}:{line}: expected name, face box, 10 votes (12 fields), found {len(row)}")
            name = row[0].strip()
            if not name:
                raise DataError(f"{path}:{line}: empty image name")
            if name in seen:
                skipped["duplicate_name"] += 1
                continue
            seen.add(name)
            image = folder / name
            if not image.is_file():
                raise DataError(f"{path}:{line}: image {image} is missing")
            rows.append({"path": str(image), "official_split": split, "name": name})
            votes.append(_votes(path, line, row[-10:]))
    listed = {r["name"] for r in rows}
    unlisted = sum(1 for p in folder.iterdir() if is_image(p.name) and p.name not in listed)
    if unlisted:
        skipped["unlabelled_images"] += unlisted
    return rows, votes, skipped


def load_ferplus_folders(root: Path, rule: VoteRule) -> DataSource:
    root = require_dir(root, FOLDER_LAYOUT)
    rows, votes, skipped = [], [], Counter()
    for folder, split in FOLDERS.items():
        if not (root / folder).is_dir():
            raise DataError(f"folder not found: {(root / folder).resolve()} (expected layout: {FOLDER_LAYOUT})")
        r, v, s = _read_label_csv(root / folder, split)
        rows += r
        votes += v
        skipped.update(s)
    _, samples = _build(rows, votes, rule, skipped)
    files = [Path(r["path"]) for r in rows] + [root / f / "label.csv" for f in FOLDERS]
    return DataSource(
        "ferplus", list(CLASSES), samples, skipped=dict(skipped), fingerprint=tree_fingerprint(files) + f"-{rule}"
    )


LAYOUTS = (Layout("folders", "FER2013Train", FOLDER_LAYOUT), Layout("csv", "fer2013new.csv", CSV_LAYOUT))


@DATASETS.register("ferplus")
def load_ferplus(
    root: Path,
    layout: Literal["auto", "csv", "folders"] = "auto",
    vote: VoteRule = "majority",
    fer2013_csv: str | None = None,
) -> DataSource:
    """``layout=auto``: the folders when ``FER2013Train/`` exists, else the csv pair."""
    root = Path(root)
    if pick_layout("FERPlus", "ferplus", root, layout, LAYOUTS) == "folders":
        return load_ferplus_folders(root, vote)
    return load_ferplus_csv(root, vote, Path(fer2013_csv) if fer2013_csv else None)
