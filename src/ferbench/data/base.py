"""The one contract every data-set loader fulfils: a table of samples, the class names, and a reader.

A loader is ``load(root: Path, **options) -> DataSource``. ``samples`` has one row per image with the
columns in ``SAMPLE_COLUMNS``; images live either in files (``path``) or in memory (``pixels``, row i
is image i), as for ``fer2013.csv`` and ``synthetic``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ferbench.errors import ConfigError, DataError
from ferbench.registry import Registry

SAMPLE_COLUMNS = ("path", "label", "subject", "sequence", "official_split")
"""``official_split`` is 'train', 'val', 'test' or None; subject/sequence are None where unknown."""

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class DataSource:
    name: str
    classes: list[str]
    samples: pd.DataFrame
    pixels: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason -> count of items left out while reading; copied into the run record, never hidden."""
    fingerprint: str = ""
    """Changes whenever the underlying files' bytes change (``tree_fingerprint``); part of the cache key."""
    whole_frames: bool = False
    """The images are camera frames, not face crops (CK+'s original layout): they are always face-cropped."""
    boxes: list[np.ndarray] | None = None
    """Per sample, its faces' (K, 4) boxes x1, y1, x2, y2 as fractions of the image, where the loader knows them
    exactly (``data=pasted_*``); a detector then needs no box CSV and no face finder."""

    def __post_init__(self) -> None:
        missing = [c for c in SAMPLE_COLUMNS if c not in self.samples.columns]
        assert not missing, f"loader for {self.name} forgot columns {missing}"
        self.samples = self.samples.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return self.samples["label"].to_numpy(dtype=np.int64)

    def read_image(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8, HxW (grey) or HxWx3 (RGB)."""
        if self.pixels is not None:
            return self.pixels[i]
        from ferbench.data.images import read_image

        return read_image(Path(self.samples.at[i, "path"]))

    def class_counts(self) -> pd.DataFrame:
        """Images per class and official split: the table ``ferbench datasets`` prints."""
        split = self.samples["official_split"].fillna("all")
        table = pd.crosstab(self.samples["label"].map(dict(enumerate(self.classes))), split)
        return table.reindex(self.classes, fill_value=0)


Loader = Callable[..., DataSource]
DATASETS: Registry[Loader] = Registry("data set")


def sample_table(rows: Sequence[dict] | pd.DataFrame) -> pd.DataFrame:
    """Rows -> a sample table with every contract column present (missing ones filled with None)."""
    frame = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows)
    for column in SAMPLE_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["label"] = frame["label"].astype(np.int64)
    return frame[[*SAMPLE_COLUMNS, *[c for c in frame.columns if c not in SAMPLE_COLUMNS]]]


def select_classes(source: DataSource, drop: Sequence[str] = ()) -> DataSource:
    """Drop whole classes (CK+ without contempt for lightvgg) and renumber the rest in their order."""
    if not drop:
        return source
    unknown = sorted(set(drop) - set(source.classes))
    if unknown:
        raise DataError(f"data.drop_classes names {unknown}, not classes of {source.name}: {source.classes}")
    kept = [c for c in source.classes if c not in drop]
    new_label = {source.classes.index(c): i for i, c in enumerate(kept)}
    keep_rows = source.samples["label"].isin(list(new_label)).to_numpy()
    samples = source.samples[keep_rows].copy()
    samples["label"] = samples["label"].map(new_label).astype(np.int64)
    pixels = source.pixels[keep_rows] if source.pixels is not None else None
    skipped = dict(source.skipped)
    skipped["dropped_classes"] = int((~keep_rows).sum())
    boxes = [b for b, keep in zip(source.boxes, keep_rows, strict=True) if keep] if source.boxes is not None else None
    fingerprint = source.fingerprint + f"-drop{sorted(drop)}"
    return DataSource(source.name, kept, samples, pixels, skipped, fingerprint, source.whole_frames, boxes)


def require_dir(root: Path, layout: str) -> Path:
    """A missing data folder names the layout ferbench expected and the path it tried."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root.resolve()} (expected layout: {layout})")
    return root


@dataclass(frozen=True)
class Layout:
    """One published layout of a data set: its name (``data.options.layout``), the path under the root whose
    presence picks it under ``auto`` (None: the fallback), and the layout as errors describe it."""

    name: str
    marker: str | None
    description: str


def pick_layout(title: str, key: str, root: Path, layout: str, layouts: Sequence[Layout]) -> str:
    """``layout`` by name, or under ``auto`` the first layout whose marker exists under ``root``; a data set in no
    layout is a DataError naming every layout, an unknown name a ConfigError naming the choices."""
    names = [candidate.name for candidate in layouts]
    if layout == "auto":
        for candidate in layouts:
            if candidate.marker is None or (root / candidate.marker).exists():
                return candidate.name
        expected = ", or ".join(candidate.description for candidate in layouts)
        raise DataError(f"{title} not found in {root.resolve()} (expected layout: {expected})")
    if layout not in names:
        choices = f"auto, {', '.join(names[:-1])} or {names[-1]}"
        raise ConfigError(f"data.options.layout={layout!r} for {key}; expected {choices}")
    return layout


def tree_fingerprint(paths: Sequence[Path]) -> str:
    """What files hold: each one's path (relative to the files' common folder, so a moved copy matches) and a digest
    of its bytes. Content, not dates: every copy of a data set (``cp -r``, a fresh checkout, another machine) has
    new mtimes, and must keep its runs' ids; an image replaced by another of the same size must not, even with its
    mtime set back. Each file is read once per ``stat_key``: ``file_digests`` keeps the digests on disk."""
    import hashlib
    import os

    absolute = sorted(os.path.abspath(p) for p in paths)
    base = os.path.commonpath([os.path.dirname(p) for p in absolute]) if absolute else ""
    digests = file_digests(absolute, base)
    h = hashlib.sha1()
    for p in absolute:
        h.update(f"{os.path.relpath(p, base)}|{digests[p]}\n".encode())
    return h.hexdigest()[:16]


def stat_key(st) -> list[int]:
    """What a file's digest is reused for: size, mtime, ctime and inode. A user can set mtime back (``touch -r``,
    ``cp -p``, ``rsync -t``), so size and mtime alone kept a replaced image's old digest; ctime is set by the
    kernel on every write or rename and cannot be set back, and a file renamed over another has a new inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


_DIGESTS: dict[tuple, str] = {}
"""Per process: (path, *stat_key) -> digest of the file's bytes."""


def file_digests(paths: Sequence[str], base: str) -> dict[str, str]:
    """blake2b digests of ``paths``' bytes, read only for files whose ``stat_key`` was not seen before (in this
    process or, through ``<cache>/file-digests/``, an earlier one)."""
    import hashlib
    import json
    import os

    from ferbench.paths import default_cache_dir
    from ferbench.records.atomic import write_text

    store = default_cache_dir() / "file-digests" / f"{hashlib.sha1(base.encode()).hexdigest()[:16]}.json"
    try:
        saved = json.loads(store.read_text()) if store.is_file() else {}
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict):  # ``[]`` or a number: not ours, so nothing known (written again below)
        saved = {}
    out, changed = {}, False
    for p in paths:
        stamp = stat_key(os.stat(p))
        key = (p, *stamp)
        known = _DIGESTS.get(key) or _saved_digest(saved.get(p), stamp)
        if known is None:
            with open(p, "rb") as f:
                known = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
            saved[p], changed = [*stamp, known], True
        _DIGESTS[key] = out[p] = known
    if changed:
        try:
            write_text(store, json.dumps(saved))
        except OSError:
            pass  # a read-only cache only costs the reading again next time
    return out


def _saved_digest(entry, stamp: list[int]) -> str | None:
    """The stored digest where the file's ``stat_key`` is the one stored with it (an older entry, keyed on size
    and mtime only, is read again once)."""
    if isinstance(entry, list) and len(entry) == len(stamp) + 1 and entry[:-1] == stamp:
        return str(entry[-1])
    return None
