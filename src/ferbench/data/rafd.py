"""``rafd``: Radboud Faces, ``Rafd090_01_Caucasian_female_angry_frontal.jpg``.

Fields: camera angle (000, 045, 090, 135, 180; 090 is frontal), subject, ethnicity, gender, emotion,
gaze (frontal, left, right). All 5 angles x 3 gazes x 8 emotions x 67 subjects = 8,040 images: the
count mnv3simam (paper 004) reports, and lightvgg (paper 001) stresses the multi-angle views ("each head
pose contains 1608 images" = 67 x 8 x 3); so both use every pose, the default here. ``poses`` and
``gazes`` select a subset; what they leave out is counted in ``skipped``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ferbench.data.base import DATASETS, DataSource, require_dir, sample_table, tree_fingerprint
from ferbench.errors import DataError

CLASSES = ["angry", "contemptuous", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"]
NAME = re.compile(
    r"^Rafd(?P<pose>\d{3})_(?P<subject>\d+)_(?P<ethnicity>[A-Za-z]+)_(?P<gender>[A-Za-z]+)_"
    r"(?P<emotion>[A-Za-z]+)_(?P<gaze>[A-Za-z]+)\.(jpe?g|png)$",
    re.IGNORECASE,
)
LAYOUT = "<root>/Rafd090_01_Caucasian_female_angry_frontal.jpg (pose_subject_ethnicity_gender_emotion_gaze)"


@DATASETS.register("rafd")
def load_rafd(root: Path, poses: Sequence[int] | None = None, gazes: Sequence[str] | None = None) -> DataSource:
    """``poses``: camera angles to keep (e.g. [45, 90, 135]); None keeps all. ``gazes`` likewise."""
    root = require_dir(root, LAYOUT)
    keep_poses = None if poses is None else {int(p) for p in poses}
    keep_gazes = None if gazes is None else {g.lower() for g in gazes}
    rows, skipped = [], Counter()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        match = NAME.match(path.name)
        if match is None:
            if path.name.lower().startswith("rafd"):
                raise DataError(f"unexpected RaFD file name {path}: expected {LAYOUT}")
            skipped["non_rafd_files"] += 1
            continue
        emotion = match["emotion"].lower()
        if emotion not in CLASSES:
            raise DataError(f"unknown RaFD emotion {emotion!r} in {path}: expected one of {', '.join(CLASSES)}")
        pose, gaze = int(match["pose"]), match["gaze"].lower()
        if keep_poses is not None and pose not in keep_poses:
            skipped["excluded_poses"] += 1
            continue
        if keep_gazes is not None and gaze not in keep_gazes:
            skipped["excluded_gazes"] += 1
            continue
        rows.append(
            {
                "path": str(path),
                "label": CLASSES.index(emotion),
                "subject": f"{int(match['subject']):02d}",
                "pose": pose,
                "gaze": gaze,
                "gender": match["gender"].lower(),
                "ethnicity": match["ethnicity"].lower(),
            }
        )
    if not rows:
        raise DataError(f"no RaFD images in {root.resolve()} (expected layout: {LAYOUT}; poses={poses}, gazes={gazes})")
    paths = [Path(r["path"]) for r in rows]
    return DataSource(
        "rafd", list(CLASSES), sample_table(rows), skipped=dict(skipped), fingerprint=tree_fingerprint(paths)
    )
