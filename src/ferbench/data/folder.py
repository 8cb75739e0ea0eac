"""``folder``: any ``<root>/<class>/*.<image>`` tree (optionally ``<root>/<split>/<class>/...``), classes sorted.

Also the shared scanner of class-folder trees that the FER2013 and CK+48 loaders use.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ferbench.data.base import DATASETS, DataSource, file_digests, require_dir, sample_table, tree_fingerprint
from ferbench.errors import DataError

log = logging.getLogger("ferbench")
_WARNED: set[str] = set()
"""Roots already warned about images in two classes: once per process, not once per cell of a table."""

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm", ".webp"})
SPLIT_DIRS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
"""Top-level folder name -> official split, for trees published as ``train/<class>/...``, ``test/<class>/...``."""


@dataclass
class ClassTree:
    """What a scan of ``<root>/<class>/<file>`` found: (path, class name) pairs and what it left out."""

    files: list[tuple[Path, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _resolves(entry: os.DirEntry) -> bool:
    """False for a link that leads nowhere (dangling, or a loop: ``ln -s b a; ln -s a b``): counted, not a crash."""
    return not entry.is_symlink() or os.path.exists(entry.path)


def scan_class_tree(root: Path, classes: Sequence[str] | None = None, *, allow_empty: bool = False) -> ClassTree:
    """Files of every ``root/<class>/``; an unknown class folder (when ``classes`` is given) or an empty one
    raises DataError naming it; non-image files and stray files at the top are counted, never hidden."""
    tree = ClassTree()
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not _resolves(entry):
            tree.skipped["broken_links"] += 1
            continue
        if not entry.is_dir():
            if not entry.name.startswith("."):
                tree.skipped["files_outside_class_folders"] += 1
            continue
        if entry.name.startswith("."):
            continue
        if classes is not None and entry.name not in classes:
            raise DataError(f"unknown class folder {entry.path}: expected one of {list(classes)}")
        n_before = len(tree.files)
        for item in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if not _resolves(item):
                tree.skipped["broken_links"] += 1
            elif item.is_dir():
                tree.skipped["subfolders_in_class_folders"] += 1
            elif is_image(item.name):
                tree.files.append((Path(item.path), entry.name))
            elif not item.name.startswith("."):
                tree.skipped["non_image_files"] += 1
        if len(tree.files) == n_before and not allow_empty:
            raise DataError(
                f"empty class folder {entry.path}: expected image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
    return tree


def split_dirs_of(root: Path) -> dict[str, Path] | None:
    """``{split: folder}`` when every top-level folder of ``root`` is a split name (train/val/test...), else None."""
    dirs = [p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")]
    if dirs and all(p.name.lower() in SPLIT_DIRS for p in dirs):
        return {SPLIT_DIRS[p.name.lower()]: p for p in sorted(dirs)}
    return None


@DATASETS.register("folder")
def load_folder(
    root: Path, classes: Sequence[str] | None = None, split_dirs: bool | str = "auto", name: str = "folder"
) -> DataSource:
    """Classes are the sub-folder names, sorted (or ``classes``, in that order); with ``split_dirs`` (auto:
    when every top folder is train/val/test...) the top folder gives the official split."""
    root = require_dir(root, "<root>/<class>/*.png (or <root>/<train|val|test>/<class>/*.png)")
    splits = split_dirs_of(root) if split_dirs == "auto" else None
    if split_dirs is True:
        splits = split_dirs_of(root)
        if splits is None:
            raise DataError(f"{root}: split_dirs=true but the top folders are not all split names {sorted(SPLIT_DIRS)}")
    parts = splits or {None: root}
    trees = {split: scan_class_tree(folder, classes, allow_empty=False) for split, folder in parts.items()}
    found = sorted({c for tree in trees.values() for _, c in tree.files})
    class_list = list(classes) if classes is not None else found
    if not class_list:
        raise DataError(f"no class folders with images under {root}")
    index = {c: i for i, c in enumerate(class_list)}
    rows, skipped = [], Counter()
    for split, tree in trees.items():
        skipped.update(tree.skipped)
        rows += [{"path": str(p), "label": index[c], "official_split": split} for p, c in tree.files]
    samples = sample_table(rows)
    fingerprint = tree_fingerprint([Path(r["path"]) for r in rows])
    _warn_images_in_two_classes(root, rows)
    return DataSource(name, class_list, samples, skipped=dict(skipped), fingerprint=fingerprint)


def _warn_images_in_two_classes(root: Path, rows: list[dict]) -> None:
    """One image (the same bytes: a copy or a link) filed under two class folders has two labels: the run trains
    on both, and at best one is right. Counted in one warning line, with an example; the digests are the
    fingerprint's, already read."""
    if str(root) in _WARNED or not rows:
        return
    paths = [os.path.abspath(r["path"]) for r in rows]
    digests = file_digests(paths, os.path.commonpath([os.path.dirname(p) for p in paths]))
    labels: dict[str, dict[int, str]] = {}
    for path, row in zip(paths, rows, strict=True):
        labels.setdefault(digests[path], {}).setdefault(row["label"], path)
    mixed = [found for found in labels.values() if len(found) > 1]
    if mixed:
        _WARNED.add(str(root))
        example = " and ".join(os.path.relpath(p, root) for p in list(mixed[0].values())[:2])
        log.warning(
            "%s: %d image(s) are filed under two or more classes (same bytes, e.g. %s); each copy keeps its "
            "folder's label",
            root,
            len(mixed),
            example,
        )
