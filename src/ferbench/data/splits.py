"""Split protocols as pure functions: ``split(samples, seed, **params) -> list[Fold]``.

Every fold carves its validation part (for early stopping and best-checkpoint choice) from its own
training side, stratified and seeded: model selection never looks at the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from ferbench.config import plain_dict
from ferbench.errors import ConfigError, DataError
from ferbench.registry import Registry


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, list[int]]:
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}


SPLITS: Registry = Registry("split")


def carve_val(train: np.ndarray, labels: np.ndarray, val_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded validation part of ``train``; falls back to unstratified for tiny classes."""
    if val_ratio <= 0:
        return np.sort(train), np.array([], dtype=np.int64)
    y = labels[train]
    stratify = y if np.bincount(y).min(initial=0) >= 2 and len(train) * val_ratio >= len(np.unique(y)) else None
    tr, va = train_test_split(train, test_size=val_ratio, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(va)


@SPLITS.register("official")
def official_split(
    samples: pd.DataFrame, seed: int, val_ratio: float = 0.1, use_official_val: bool = True
) -> list[Fold]:
    """The data set's own train/test (and validation, if it has one and ``use_official_val``)."""
    split = samples["official_split"]
    if split.isna().all():
        raise ConfigError("split=official: this data set has no official split; use split=holdout or split=kfold")
    labels = samples["label"].to_numpy()
    train = np.flatnonzero(split.eq("train").to_numpy())
    val = np.flatnonzero(split.eq("val").to_numpy())
    test = np.flatnonzero(split.eq("test").to_numpy())
    if use_official_val and len(val):
        return [Fold(0, train, val, test)]
    train = np.sort(np.concatenate([train, val]))
    tr, va = carve_val(train, labels, val_ratio, seed)
    return [Fold(0, tr, va, test)]


@SPLITS.register("holdout")
def holdout_split(samples: pd.DataFrame, seed: int, ratio: float = 0.1, val_ratio: float = 0.1) -> list[Fold]:
    """Stratified random hold-out: ``ratio`` of the images for test (0.1 for 90/10, 0.2 for 80/20)."""
    labels = samples["label"].to_numpy()
    index = np.arange(len(samples))
    train, test = train_test_split(index, test_size=ratio, random_state=seed, stratify=labels)
    tr, va = carve_val(train, labels, val_ratio, seed)
    return [Fold(0, tr, va, np.sort(test))]


@SPLITS.register("kfold")
def kfold_split(samples: pd.DataFrame, seed: int, k: int = 10, val_ratio: float = 0.1) -> list[Fold]:
    """Stratified k-fold CV: every fold is run and recorded as its own row."""
    labels = samples["label"].to_numpy()
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    return [Fold(i, *carve_val(tr, labels, val_ratio, seed), np.sort(te)) for i, (tr, te) in enumerate(folds)]


@SPLITS.register("subject_kfold")
def subject_kfold_split(samples: pd.DataFrame, seed: int, k: int = 10, val_ratio: float = 0.1) -> list[Fold]:
    """k folds grouped by subject: nobody appears on both sides of any fold (validation included)."""
    if samples["subject"].isna().any():
        raise DataError("split=subject_kfold needs the subject of every image; this data set does not name them")
    labels = samples["label"].to_numpy()
    groups = samples["subject"].astype(str).to_numpy()
    if len(np.unique(groups)) < k:
        raise ConfigError(f"split.k={k} but the data set has only {len(np.unique(groups))} subjects")
    outer = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for i, (train, test) in enumerate(outer.split(np.zeros(len(labels)), labels, groups)):
        tr, va = _grouped_val(train, labels, groups, val_ratio, seed)
        folds.append(Fold(i, tr, va, np.sort(test)))
    return folds


def _grouped_val(train, labels, groups, val_ratio, seed) -> tuple[np.ndarray, np.ndarray]:
    """Validation subjects drawn from the training subjects, so validation is subject-independent too."""
    if val_ratio <= 0:
        return np.sort(train), np.array([], dtype=np.int64)
    n_inner = max(2, round(1 / val_ratio))
    inner = StratifiedGroupKFold(n_splits=n_inner, shuffle=True, random_state=seed)
    tr, va = next(inner.split(np.zeros(len(train)), labels[train], groups[train]))
    return np.sort(train[tr]), np.sort(train[va])


def check_splittable(samples: pd.DataFrame, name: str, min_classes: int = 2, **params) -> None:
    """What every split needs, said in one line before sklearn would say it in a traceback: images, two classes
    or more (a classifier's; a detector of one class needs one), and for stratified k-fold ``k`` images of a class."""
    counts = samples["label"].value_counts().sort_index()
    if counts.empty:
        raise DataError("the data set has no images: nothing to split")
    if len(counts) < min_classes:
        raise DataError(
            f"the data set has one class (label {counts.index[0]}, {counts.iloc[0]} images): a classifier needs two "
            "or more (a folder data set's layout is <root>/<class>/<image>, one folder per class)"
        )
    k = params.get("k")
    if name == "kfold" and k and (len(samples) < int(k) or counts.max() < int(k)):
        # sklearn's own rule (a class with fewer than k images only draws its warning): said in one line
        raise ConfigError(
            f"split.k={k} but no class has {k} images (the most: {counts.max()}, {len(samples)} in all): "
            f"stratified k-fold needs at least k in some class; use split.k={max(2, int(counts.max()))} or less"
        )
    if name == "holdout" and counts.min() < 2:
        raise ConfigError(f"split=holdout: class label {counts.idxmin()} has one image; a stratified split needs two")


def make_folds(samples: pd.DataFrame, name: str, seed: int, min_classes: int = 2, **params) -> list[Fold]:
    check_splittable(samples, name, min_classes, **params)
    return SPLITS.get(name)(samples, seed, **params)


def protocol_folds(folds: list[Fold], protocol: str) -> list[Fold]:
    """``select_on_test`` reproduces papers that chose checkpoints on test: validation *is* the test split."""
    if protocol != "select_on_test":
        return folds
    return [Fold(f.index, np.sort(np.concatenate([f.train, f.val])), f.test, f.test) for f in folds]


def subset_train(fold: Fold, labels: np.ndarray, fraction: float, seed: int) -> Fold:
    """Smoke runs train on a stratified, seeded fraction of the training part; val and test unchanged."""
    if fraction >= 1:
        return fold
    _, kept = carve_val(fold.train, labels, fraction, seed)
    return Fold(fold.index, kept, fold.val, fold.test)


def run_folds(cfg: DictConfig, samples: pd.DataFrame, labels: np.ndarray, min_classes: int) -> list[Fold]:
    """The split protocol's folds for this run's seed (and ``protocol``); ``min_classes``: the task's
    (``Task.min_classes``: a face detector may know one expression)."""
    split_params = {k: v for k, v in plain_dict(cfg.split).items() if k != "name"}
    folds = make_folds(samples, cfg.split.name, cfg.seed, min_classes, **split_params)
    return protocol_folds(folds, cfg.protocol)
