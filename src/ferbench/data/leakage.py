"""How much of a fold's test side the training side (train + val) has already seen.

Three overlaps per test image: the same subject, the same sequence (CK+ frames of one clip), or a
near-identical picture (64-bit perceptual hash within ``threshold`` bits: FER2013's own duplicates,
consecutive frames). Random splits of CK+ or RaFD score high on all three; subject-independent ones
score zero on the first two by construction.

The default hash is pHash (low DCT frequencies): on CK+48 at distance <= 4 it flags 89 of 99 test frames
of a random 90/10 split and only 11 of 981 across subject-independent folds (different people); dHash
flags 441 of those 981, since aligned face crops share their coarse gradients.

A run records its folds' overlaps, summed, as ``leakage.json`` (``write_run_leakage``, the key names shared with
``ferbench leakage``); tables read it back (``read_leakage``) and never compute it. The perceptual hashes are cached
once per prepared data set, beside the preprocessed array.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pandas as pd

from ferbench.data.base import DataSource
from ferbench.data.splits import Fold
from ferbench.records.atomic import write_stream, write_text
from ferbench.records.record import data_choice

HashMethod = Literal["dhash", "phash"]
_BITS = 1 << np.arange(64, dtype=np.uint64)
log = logging.getLogger("ferbench")


@dataclass(frozen=True)
class LeakageReport:
    n_test: int
    n_train: int
    shared_subject: int | None
    """Test images whose subject also appears on the training side; None when subjects are unknown."""
    shared_sequence: int | None
    near_duplicate: int
    """Test images with a training image within ``threshold`` bits of perceptual hash."""
    exact_duplicate: int
    """... of which at distance 0."""
    threshold: int
    method: str

    def fractions(self) -> dict[str, float | None]:
        n = max(self.n_test, 1)
        return {
            k: (None if getattr(self, k) is None else getattr(self, k) / n)
            for k in ("shared_subject", "shared_sequence", "near_duplicate", "exact_duplicate")
        }

    def as_dict(self) -> dict:
        return {**asdict(self), **{f"{k}_fraction": v for k, v in self.fractions().items()}}


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return image.reshape(image.shape[0], image.shape[1])


def _pack(bits: np.ndarray) -> np.ndarray:
    """N x 64 bool -> N uint64."""
    return (bits.astype(np.uint64) * _BITS).sum(axis=1, dtype=np.uint64)


def image_hashes(images: np.ndarray, method: HashMethod = "phash") -> np.ndarray:
    """One uint64 per image of an N x H x W (x C) uint8 array."""
    if method == "dhash":  # brightness gradient of a 9x8 thumbnail
        small = np.stack([cv2.resize(_grey(im), (9, 8), interpolation=cv2.INTER_AREA) for im in images])
        bits = small[:, :, 1:] > small[:, :, :-1]
    elif method == "phash":  # low 8x8 DCT frequencies of a 32x32 thumbnail, against their median
        small = [cv2.resize(_grey(im), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) for im in images]
        low = np.stack([cv2.dct(s)[:8, :8] for s in small]).reshape(len(images), 64)
        bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown hash method {method!r}; choose dhash or phash")
    return _pack(bits.reshape(len(images), 64))


def nearest_distance(query: np.ndarray, reference: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Smallest Hamming distance from each query hash to any reference hash (65 when there is none)."""
    out = np.full(len(query), 65, dtype=np.int64)
    if len(reference) == 0:
        return out
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk, None]
        out[start : start + chunk] = np.bitwise_count(q ^ reference[None, :]).min(axis=1)
    return out


def leakage_report(
    source: DataSource,
    fold: Fold,
    images: np.ndarray | None = None,
    *,
    threshold: int = 4,
    method: HashMethod = "phash",
    hashes: np.ndarray | None = None,
) -> LeakageReport:
    """``images``: the prepared array aligned with ``source`` rows (``PreparedImages.images`` of a source
    with nothing skipped); ``hashes`` (from ``image_hashes``) may be passed instead, to reuse across folds."""
    train = np.concatenate([fold.train, fold.val]).astype(np.int64)
    test = np.asarray(fold.test, dtype=np.int64)
    if hashes is None:
        if images is None:
            raise ValueError("leakage_report needs the prepared images or their hashes")
        if len(images) != len(source):
            raise ValueError(f"images has {len(images)} rows, the source {len(source)}: pass one row per sample")
        hashes = image_hashes(images, method)
    distance = nearest_distance(hashes[test], hashes[train])

    def shared(column: str) -> int | None:
        values = source.samples[column]
        if values.isna().any():
            return None
        seen = values.iloc[train].astype(str).to_numpy()
        return int(np.isin(values.iloc[test].astype(str).to_numpy(), seen).sum())

    return LeakageReport(
        n_test=len(test),
        n_train=len(train),
        shared_subject=shared("subject"),
        shared_sequence=shared("sequence"),
        near_duplicate=int((distance <= threshold).sum()),
        exact_duplicate=int((distance == 0).sum()),
        threshold=threshold,
        method=method,
    )


# ---- a run's record of it: leakage.json

LEAKAGE_FILE = "leakage.json"
KEYS = ("test_images", "subject_overlap", "sequence_overlap", "exact_duplicates", "near_duplicates")
"""Summed over folds: test images, and how many of them share a subject / a sequence with the training side
(train + validation), or have an exact / near-duplicate (perceptual hash within the threshold) there."""
_FIELDS = dict(
    zip(KEYS, ("n_test", "shared_subject", "shared_sequence", "exact_duplicate", "near_duplicate"), strict=True)
)


def cached_hashes(images: np.ndarray, cache_path: Path | None) -> np.ndarray:
    """pHash of every prepared image, stored as ``<array>.phash.npy`` beside a cached array: hashed once. A stored
    file that does not read, or is not one uint64 per image, is hashed again with one line (``preprocess`` deletes
    it whenever it writes the array anew)."""
    path = None if cache_path is None else Path(cache_path).with_suffix(".phash.npy")
    if path is not None and path.is_file():
        try:
            hashes = np.load(path)  # a file starting "PK" is opened as an .npz archive: not ours either
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            hashes, why = None, f"unreadable ({type(exc).__name__}: {exc})"
        else:
            if not isinstance(hashes, np.ndarray):
                hashes.close()
                hashes, why = None, f"an .npz archive, not ({len(images)},) uint64"
            else:
                why = f"shape {hashes.shape} {hashes.dtype}, not ({len(images)},) uint64"
        if hashes is not None and hashes.shape == (len(images),) and hashes.dtype == np.uint64:
            return hashes
        log.warning("cached image hashes %s %s; hashed again", path, why)
    hashes = image_hashes(np.asarray(images))
    if path is not None:
        write_stream(path, lambda handle: np.save(handle, hashes))
    return hashes


def seen_side(fold: Fold) -> Fold:
    """Training side without the test images themselves: under ``select_on_test`` validation *is* test,
    which is selection on test (recorded as the protocol), not a second copy of those images."""
    train = np.setdiff1d(np.concatenate([fold.train, fold.val]), fold.test)
    return Fold(fold.index, train, np.array([], dtype=np.int64), fold.test)


def fold_leakage(samples: pd.DataFrame, folds: Sequence[Fold], hashes: np.ndarray) -> list[dict]:
    """One dict per fold with the shared keys (None where subjects or sequences are unknown)."""
    source = DataSource("leakage", [], samples)
    out = []
    for fold in folds:
        report = leakage_report(source, seen_side(fold), hashes=hashes)
        out.append({"fold": fold.index, **{k: getattr(report, f) for k, f in _FIELDS.items()}})
    return out


def summed(per_fold: Sequence[dict]) -> dict:
    """Sum each key over folds; None if any fold could not tell (no subjects, no sequences)."""
    totals = {}
    for key in KEYS:
        values = [f[key] for f in per_fold]
        totals[key] = None if any(v is None for v in values) else int(sum(values))
    return totals


def leakage_figures(samples: pd.DataFrame, folds: Sequence[Fold], hashes: np.ndarray, **about) -> dict:
    """What ``leakage.json`` and ``ferbench leakage --out`` hold: the sums, then the per-fold figures."""
    per_fold = fold_leakage(samples, folds, hashes)
    return {**summed(per_fold), "folds": per_fold, "hash": "phash", "threshold": 4, **about}


def write_run_leakage(run_dir: Path, samples: pd.DataFrame, folds: Sequence[Fold], prepared, cfg) -> dict:
    """The run's hook: ``<run_dir>/leakage.json`` for the folds it trains (hashes cached per data set)."""
    hashes = cached_hashes(prepared.images, prepared.cache_path)
    about = {"data": data_choice(cfg), "split": str(cfg.split.name), "protocol": str(cfg.protocol)}
    figures = leakage_figures(samples, folds, hashes, **about)
    write_text(Path(run_dir) / LEAKAGE_FILE, json.dumps(figures, indent=1))
    return figures


def read_leakage(run_dirs: Sequence[Path]) -> dict | None:
    """A cell's figures summed over its runs' ``leakage.json`` (``runs`` says how many); None if none has one."""
    records = []
    for run_dir in run_dirs:
        path = Path(run_dir) / LEAKAGE_FILE
        if path.is_file():
            try:
                records.append(json.loads(path.read_text()))
            except (ValueError, UnicodeDecodeError) as exc:
                log.warning("%s is damaged (%s): its figures are left out of the table's leakage note", path, exc)
    if not records:
        return None
    return {**summed(records), "runs": len(records), "of_runs": len(run_dirs), "split": records[0].get("split")}
