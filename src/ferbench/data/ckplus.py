"""``ckplus``: CK+ in its original distribution or in the common ``CK+48/<class>/`` layout.

``original``: ``cohn-kanade-images/Sxxx/yyy/*.png`` with ``Emotion/Sxxx/yyy/*_emotion.txt`` (one code per
labelled sequence: 1 anger .. 7 surprise); the last ``n_peak`` frames of each labelled sequence take its
label, and with ``first_frame_neutral`` its first frame is a ``neutral`` image (off by default: the papers
use the 7 labelled expressions). ``ck48``: ``CK+48/<class>/S<subject>_<sequence>_<frame>.png``, already
the last 3 frames; ``n_peak`` < 3 keeps fewer. Subject is ``Sxxx``, sequence ``Sxxx_yyy``, in both.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Literal

import pandas as pd

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
from ferbench.errors import ConfigError, DataError

CODES = ["neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
"""CK+'s emotion codes 0..7; the Emotion files only ever hold 1..7."""
CLASSES = CODES[1:]
ORIGINAL_LAYOUT = "<root>/cohn-kanade-images/Sxxx/yyy/*.png and <root>/Emotion/Sxxx/yyy/*_emotion.txt"
CK48_LAYOUT = "<root>/CK+48/<class>/S<subject>_<sequence>_<frame>.png (or <root>/<class>/...)"
FRAME_NAME = re.compile(r"^(?P<subject>S\d+)_(?P<sequence>\d+)_(?P<frame>\d+)\.\w+$", re.IGNORECASE)


def _emotion_code(path: Path) -> int:
    text = path.read_text().strip()
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:1: expected one emotion code 1..7, found {text!r}") from None
    if value != int(value) or not 1 <= int(value) <= 7:
        raise DataError(f"{path}:1: unknown emotion code {text!r}; expected 1..7 ({', '.join(CLASSES)})")
    return int(value)


def load_original(root: Path, n_peak: int, first_frame_neutral: bool) -> DataSource:
    images = root / "cohn-kanade-images"
    emotions = next((p for p in (root / "Emotion", root / "Emotion_labels" / "Emotion") if p.is_dir()), None)
    if not images.is_dir() or emotions is None:
        raise DataError(f"CK+ original layout not found under {root.resolve()} (expected layout: {ORIGINAL_LAYOUT})")
    classes = (["neutral"] if first_frame_neutral else []) + CLASSES
    rows, skipped = [], Counter()
    for subject_dir in sorted(p for p in images.iterdir() if p.is_dir()):
        for seq_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            label_files = sorted((emotions / subject_dir.name / seq_dir.name).glob("*_emotion.txt"))
            if not label_files:
                skipped["unlabelled_sequences"] += 1
                continue
            if len(label_files) > 1:
                raise DataError(f"{label_files[0].parent}: {len(label_files)} emotion files; expected one per sequence")
            frames = sorted(seq_dir.glob("*.png"))
            if not frames:
                raise DataError(f"{seq_dir}: labelled by {label_files[0]} but holds no .png frames")
            code = _emotion_code(label_files[0])
            sequence = f"{subject_dir.name}_{seq_dir.name}"
            peak = frames[-n_peak:]
            picked = [(f, classes.index(CODES[code])) for f in peak]
            if first_frame_neutral and frames[0] not in peak:
                picked.insert(0, (frames[0], 0))
            rows += [{"path": str(f), "label": y, "subject": subject_dir.name, "sequence": sequence} for f, y in picked]
    if not rows:
        raise DataError(f"no labelled CK+ sequences under {root.resolve()} (expected layout: {ORIGINAL_LAYOUT})")
    paths = [Path(r["path"]) for r in rows] + sorted(emotions.rglob("*_emotion.txt"))
    # 640x490 frames, the face a third of them: shrunk whole to 48x48 they would not be faces (CK+48 is cropped)
    source = DataSource(
        "ckplus", classes, sample_table(rows), skipped=dict(skipped), fingerprint=tree_fingerprint(paths)
    )
    source.whole_frames = True
    return source


def load_ck48(root: Path, n_peak: int) -> DataSource:
    tree = scan_class_tree(root, CLASSES)
    rows = []
    for path, cls in tree.files:
        match = FRAME_NAME.match(path.name)
        if match is None:
            raise DataError(f"unexpected CK+48 file name {path}: expected S<subject>_<sequence>_<frame>.png")
        subject = match["subject"].upper()
        rows.append(
            {
                "path": str(path),
                "label": CLASSES.index(cls),
                "subject": subject,
                "sequence": f"{subject}_{match['sequence']}",
                "frame": int(match["frame"]),
            }
        )
    if not rows:
        raise DataError(f"no CK+48 images under {root.resolve()} (expected layout: {CK48_LAYOUT})")
    samples = sample_table(rows)
    skipped = Counter(tree.skipped)
    rank = samples.groupby("sequence")["frame"].rank(ascending=False, method="first")
    late = (rank > n_peak).to_numpy()
    if late.any():
        skipped["frames_before_peak"] += int(late.sum())
        samples = samples[~late]
    mixed = samples.groupby("sequence")["label"].nunique()
    if (mixed > 1).any():
        raise DataError(f"{root}: sequences {list(mixed[mixed > 1].index[:5])} appear under more than one class")
    paths = [Path(p) for p in samples["path"]]
    return DataSource(
        "ckplus", list(CLASSES), pd.DataFrame(samples), skipped=dict(skipped), fingerprint=tree_fingerprint(paths)
    )


LAYOUTS = (Layout("original", "cohn-kanade-images", ORIGINAL_LAYOUT), Layout("ck48", None, CK48_LAYOUT))


@DATASETS.register("ckplus")
def load_ckplus(
    root: Path,
    layout: Literal["auto", "original", "ck48"] = "auto",
    n_peak: int = 3,
    first_frame_neutral: bool = False,
) -> DataSource:
    """``layout=auto``: ``original`` when ``cohn-kanade-images/`` exists, else ``ck48`` (in ``CK+48/`` or root)."""
    root = require_dir(root, f"{ORIGINAL_LAYOUT}, or {CK48_LAYOUT}")
    if n_peak < 1:
        raise ConfigError(f"data.options.n_peak={n_peak}; expected at least 1")
    if pick_layout("CK+", "ckplus", root, layout, LAYOUTS) == "original":
        return load_original(root, n_peak, first_frame_neutral)
    if first_frame_neutral:
        raise ConfigError(
            "data.options.first_frame_neutral needs the original CK+ layout; CK+48 holds only peak frames"
        )
    folder = root / "CK+48" if (root / "CK+48").is_dir() else root
    if not any(p.is_dir() and p.name in CLASSES for p in folder.iterdir()):
        raise DataError(f"CK+ not found in {root.resolve()} (expected layout: {ORIGINAL_LAYOUT}, or {CK48_LAYOUT})")
    return load_ck48(folder, n_peak)
