"""``ferbench leakage``: how much of a split's test side the training side has already seen, without training.

Builds the folds a run with the same config would train (same data, preprocessing, split and seed), then
sums ``data.leakage`` over them (its run-level sums) and draws examples: each leaking test image beside
the training image it leaks from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ferbench.data.identity import load_source
from ferbench.data.leakage import cached_hashes, leakage_figures, nearest_distance, seen_side
from ferbench.data.splits import Fold, run_folds
from ferbench.factory import prepare, task_for
from ferbench.records.atomic import write_atomic
from ferbench.records.record import data_choice


@dataclass
class LeakageScan:
    figures: dict
    samples: pd.DataFrame
    folds: list[Fold]
    images: np.ndarray
    hashes: np.ndarray


def scan(cfg: DictConfig) -> LeakageScan:
    """The config's folds and their overlap figures (hashes cached beside the preprocessed array)."""
    source = load_source(cfg)
    prepared = prepare(cfg, source, progress=False)
    samples = source.samples[prepared.keep].reset_index(drop=True)
    folds = run_folds(cfg, samples, samples["label"].to_numpy(), task_for(cfg).min_classes)
    hashes = cached_hashes(prepared.images, prepared.cache_path)
    about = {"data": data_choice(cfg), "split": str(cfg.split.name), "seed": int(cfg.seed), "n_folds": len(folds)}
    figures = leakage_figures(samples, folds, hashes, **about, protocol=str(cfg.protocol))
    return LeakageScan(figures, samples, folds, np.asarray(prepared.images), hashes)


def examples(found: LeakageScan, n: int = 8) -> list[tuple[int, int, str]]:
    """Up to ``n`` (test index, training index, why): near-duplicates first, then same-subject pairs."""
    out: list[tuple[int, int, str]] = []
    subjects = found.samples["subject"]
    for fold in map(seen_side, found.folds):
        train, test = fold.train, fold.test
        if not len(train) or not len(test):
            continue
        distance = nearest_distance(found.hashes[test], found.hashes[train])
        for i in np.argsort(distance, kind="stable"):
            if len(out) >= n or distance[i] > 4:
                break
            nearest = train[int(np.argmin(np.bitwise_count(found.hashes[train] ^ found.hashes[test[i]])))]
            out.append((int(test[i]), int(nearest), f"pHash {int(distance[i])} bits away"))
        if len(out) < n and not subjects.isna().any():
            by_subject = pd.Series(train, index=subjects.iloc[train].astype(str).to_numpy())
            for t in test:
                subject = str(subjects.iloc[t])
                if len(out) >= n:
                    break
                if subject in by_subject.index and all(t != e[0] for e in out):
                    out.append((int(t), int(np.atleast_1d(by_subject.loc[subject])[0]), f"same subject {subject}"))
        if len(out) >= n:
            break
    return out


def draw_grid(found: LeakageScan, pairs: Sequence[tuple[int, int, str]], path: Path) -> Path | None:
    """One row per example: the test image, then the training image it overlaps with."""
    if not pairs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pairs), 2, figsize=(7, 2.4 * len(pairs)), squeeze=False)
    for (test, train, why), row in zip(pairs, axes, strict=True):
        titles = (f"test {index_name(found, test)}", f"train {index_name(found, train)}: {why}")
        for ax, index, title in zip(row, (test, train), titles, strict=True):
            image = found.images[index]
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(title, fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


def index_name(found: LeakageScan, index: int) -> str:
    path = found.samples["path"].iloc[index]
    return Path(str(path)).name if isinstance(path, str) else f"#{index}"
