"""``jaffe``: a flat folder of ``KA.AN1.39.tiff`` files (subject . expression + index . id).

The subject is the two-letter prefix; JAFFE has no sequences. A ``.tiff`` whose name does not follow
the pattern raises DataError naming it; other files (README) are counted in ``skipped``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ferbench.data.base import DATASETS, DataSource, require_dir, sample_table, tree_fingerprint
from ferbench.data.folder import is_image
from ferbench.errors import DataError

CODES = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad", "SU": "surprise"}
CLASSES = list(CODES.values())
NAME = re.compile(r"^(?P<subject>[A-Z]{2})\.(?P<code>[A-Z]{2})(?P<index>\d+)\.(?P<id>\d+)\.tiff?$", re.IGNORECASE)
LAYOUT = "<root>/*.tiff named like KA.AN1.39.tiff (subject.expression+index.id)"


@DATASETS.register("jaffe")
def load_jaffe(root: Path) -> DataSource:
    """Searches ``root`` and its sub-folders (the archive unpacks into ``jaffe/``)."""
    root = require_dir(root, LAYOUT)
    rows, skipped = [], Counter()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in (".tif", ".tiff"):
            skipped["non_image_files" if not is_image(path.name) else "other_image_files"] += 1
            continue
        match = NAME.match(path.name)
        if match is None:
            raise DataError(f"unexpected JAFFE file name {path}: expected {LAYOUT}")
        code = match["code"].upper()
        if code not in CODES:
            raise DataError(f"unknown JAFFE expression {code!r} in {path}: expected one of {', '.join(CODES)}")
        rows.append({"path": str(path), "label": CLASSES.index(CODES[code]), "subject": match["subject"].upper()})
    if not rows:
        raise DataError(f"no JAFFE images in {root.resolve()} (expected layout: {LAYOUT})")
    paths = [Path(r["path"]) for r in rows]
    return DataSource(
        "jaffe", list(CLASSES), sample_table(rows), skipped=dict(skipped), fingerprint=tree_fingerprint(paths)
    )
