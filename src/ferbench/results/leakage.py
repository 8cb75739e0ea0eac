"""Train/test overlap of a run's folds, recorded as ``leakage.json`` and read back into table notes.

``data.leakage`` measures one fold; this module sums it over a run's folds under the keys the
``ferbench leakage`` command and every run record share, caches the perceptual hashes once per prepared
data set (beside the preprocessed array), and reads the record back for rendering (never computing).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ferbench.data.base import DataSource
from ferbench.data.leakage import image_hashes, leakage_report
from ferbench.data.splits import Fold
from ferbench.records.atomic import write_atomic, write_text
from ferbench.records.record import data_choice

LEAKAGE_FILE = "leakage.json"
KEYS = ("test_images", "subject_overlap", "sequence_overlap", "exact_duplicates", "near_duplicates")
"""Summed over folds: test images, and how many of them share a subject / a sequence with the training side
(train + validation), or have an exact / near-duplicate (perceptual hash within the threshold) there."""
_FIELDS = dict(
    zip(KEYS, ("n_test", "shared_subject", "shared_sequence", "exact_duplicate", "near_duplicate"), strict=True)
)

log = logging.getLogger("ferbench")


def cached_hashes(images: np.ndarray, cache_path: Path | None) -> np.ndarray:
    """pHash of every prepared image, stored as ``<array>.phash.npy`` beside a cached array: hashed once."""
    path = None if cache_path is None else Path(cache_path).with_suffix(".phash.npy")
    if path is not None and path.is_file():
        hashes = np.load(path)
        if len(hashes) == len(images):
            return hashes
    hashes = image_hashes(np.asarray(images))
    if path is not None:
        write_atomic(path, lambda tmp: _save(tmp, hashes))
    return hashes


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array)


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


def describe(figures: dict) -> str:
    """'981 test images: 981 share a subject with training, 975 a sequence, 120 near-duplicates (3 exact)'."""

    def shared(key: str, text: str, unknown: str) -> str:  # a data set without subjects (or sequences) cannot say
        return unknown if figures.get(key) is None else f"{figures[key]} {text}"

    subject = shared("subject_overlap", "share a subject with the training side", "subjects unknown")
    sequence = shared("sequence_overlap", "a sequence", "sequences unknown")
    return (
        f"{figures['test_images']} test images: {subject}, {sequence}, {figures['near_duplicates']} have a "
        f"near-duplicate there ({figures['exact_duplicates']} exact)"
    )
