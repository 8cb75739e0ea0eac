"""``rafdb``: RAF-DB basic, ``EmoLabel/list_patition_label.txt`` + ``Image/aligned/<stem>_aligned.jpg``.

The label file's lines read ``train_00001.jpg 5`` (labels 1..7); the name's prefix is the official split.
``aligned=false`` reads ``Image/original/<name>`` instead of the 100x100 aligned faces.
"""

from __future__ import annotations

from pathlib import Path

from ferbench.data.base import DATASETS, DataSource, require_dir, sample_table, tree_fingerprint
from ferbench.errors import DataError

CLASSES = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
"""Label 1..7 of the list file, in that order."""
LAYOUT = "<root>/EmoLabel/list_patition_label.txt and <root>/Image/aligned/<name>_aligned.jpg"
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"


def _image_path(root: Path, name: str, aligned: bool) -> Path:
    if aligned:
        stem, ext = name.rsplit(".", 1) if "." in name else (name, "jpg")
        return root / "Image" / "aligned" / f"{stem}_aligned.{ext}"
    return root / "Image" / "original" / name


@DATASETS.register("rafdb")
def load_rafdb(root: Path, aligned: bool = True) -> DataSource:
    root = require_dir(root, LAYOUT)
    label_path = root / LABEL_FILE
    if not label_path.is_file():
        raise DataError(f"file not found: {label_path} (expected layout: {LAYOUT})")
    rows = []
    for line_no, line in enumerate(label_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{label_path}:{line_no}: expected '<name>.jpg <label 1-7>', found {line.strip()!r}")
        name, code = parts
        if code not in {str(i) for i in range(1, 8)}:
            raise DataError(f"{label_path}:{line_no}: unknown label {code!r}; expected 1..7 ({', '.join(CLASSES)})")
        split = name.split("_", 1)[0]
        if split not in ("train", "test"):
            raise DataError(f"{label_path}:{line_no}: name {name!r} should start with train_ or test_")
        image = _image_path(root, name, aligned)
        if not image.is_file():
            raise DataError(f"{label_path}:{line_no}: image {image} is missing (expected layout: {LAYOUT})")
        rows.append({"path": str(image), "label": int(code) - 1, "official_split": split, "name": name})
    if not rows:
        raise DataError(f"{label_path}: no labelled images")
    paths = [Path(r["path"]) for r in rows] + [label_path]
    return DataSource("rafdb", list(CLASSES), sample_table(rows), fingerprint=tree_fingerprint(paths))
