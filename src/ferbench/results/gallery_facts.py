"""What the gallery page says about the runs behind a table, read from their records only: each column as it ran
(split, folds, seeds, batch, lr, epochs, early stops, CPU hours, code commits, dates) and each cell's folds.

Nothing here is typed by hand: every figure is a sum, count or range over the runs' ``metrics.csv`` fold rows
(and ``config.yaml`` for a hold-out's ratio), so the page cannot disagree with its records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ferbench.records import record as rec
from ferbench.results.aggregate import read_run
from ferbench.results.cells import CellResult, improving_at_cap, run_setting, stopped_before_cap

RAN = ("ours", "failed")
"""Cell statuses that have values of ours (a failed cell may still hold some seeds' runs)."""


def ran(cell: CellResult) -> bool:
    return cell.status in RAN and cell.n > 0


@dataclass(frozen=True)
class Folds:
    """Counts and sums over fold rows of one or more runs."""

    runs: int
    folds: int
    stopped_early: int
    """Early stopping fired before the epoch cap: the fold converged by the stopping rule."""
    at_cap: int
    """Ran every epoch allowed."""
    best_in_last_two: int
    """At the cap with the best validation loss in one of the last two epochs: still improving where it was cut."""
    train_seconds: float
    epochs_min: int
    epochs_max: int
    caps: tuple[int, ...]

    @property
    def cpu_hours(self) -> float:
        return self.train_seconds / 3600

    @property
    def epochs(self) -> str:
        return str(self.epochs_min) if self.epochs_min == self.epochs_max else f"{self.epochs_min}–{self.epochs_max}"


def fold_counts(metrics: pd.DataFrame) -> Folds:
    """``metrics``: fold rows (``metrics.csv``) of one or more runs, each run's rows once."""
    ran_epochs = metrics["epochs_run"].astype(int)
    cap = metrics["max_epochs"].astype(int)
    seconds = metrics["train_seconds"].astype(float).sum() if "train_seconds" in metrics else math.nan
    return Folds(
        runs=int(metrics["run_id"].nunique()),
        folds=len(metrics),
        stopped_early=stopped_before_cap(metrics),
        at_cap=int((ran_epochs >= cap).sum()),
        best_in_last_two=improving_at_cap(metrics),
        train_seconds=float(seconds),
        epochs_min=int(ran_epochs.min()),
        epochs_max=int(ran_epochs.max()),
        caps=tuple(sorted(set(cap))),
    )


def read_metrics(results_dir: Path, run_ids: Iterable[str]) -> pd.DataFrame:
    """The fold rows of every complete run among ``run_ids`` (each once, in the order given)."""
    frames = []
    for run_id in dict.fromkeys(run_ids):
        metrics, _ = read_run(rec.run_dir(results_dir, run_id))
        if metrics is not None:
            frames.append(metrics)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass(frozen=True)
class ColumnFacts:
    key: str
    label: str
    """The column as it ran: the table's data set name and the records' split and folds ("CK+ (5-fold, subject)")."""
    folds: Folds
    seeds: tuple[int, ...]
    n_folds: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    commits: tuple[str, ...]
    first: str
    last: str
    """The earliest and latest fold records' timestamps (as recorded: the training machine's clock)."""


def column_facts(key: str, table_label: str, cells: Sequence[CellResult], results_dir: Path) -> ColumnFacts | None:
    """One column's runs (those of its cells that ran); None where none of them did."""
    run_ids = [r for c in cells if c.column == key and ran(c) for r in c.run_ids]
    metrics = read_metrics(results_dir, run_ids)
    if metrics.empty:
        return None
    stamps = sorted(str(t) for t in metrics["timestamp"]) if "timestamp" in metrics else []
    return ColumnFacts(
        key=key,
        label=ran_label(table_label, metrics, results_dir),
        folds=fold_counts(metrics),
        seeds=_distinct(metrics, "seed", int),
        n_folds=_distinct(metrics, "n_folds", int),
        batch_sizes=_distinct(metrics, "batch_size", int),
        lrs=_distinct(metrics, "lr", float),
        commits=tuple(dict.fromkeys(str(c)[:7] for c in metrics.get("git_commit", pd.Series(dtype=str)).dropna())),
        first=stamps[0] if stamps else "",
        last=stamps[-1] if stamps else "",
    )


def _distinct(metrics: pd.DataFrame, column: str, kind) -> tuple:
    return tuple(sorted({kind(v) for v in metrics[column].dropna()})) if column in metrics else ()


def cell_folds(cell: CellResult, results_dir: Path) -> Folds | None:
    metrics = read_metrics(results_dir, cell.run_ids)
    return None if metrics.empty else fold_counts(metrics)


def split_text(split: str, n_folds: int, ratio: float | None = None) -> str:
    """How a run split its data, in a column label's words."""
    if split == "kfold":
        return f"{n_folds}-fold"
    if split == "subject_kfold":
        return f"{n_folds}-fold, subject"
    if split == "official":
        return "official split"
    if split == "holdout" and ratio:
        return f"{round(100 * (1 - ratio))}/{round(100 * ratio)} hold-out"
    return split.replace("_", " ")


def ran_label(table_label: str, metrics: pd.DataFrame, results_dir: Path) -> str:
    """``CK+ (subject 10-fold)`` run with 5 subject folds -> ``CK+ (5-fold, subject)``: the table's name for the data
    set (its parenthesis dropped: that is what the paper ran) and what the records say ran."""
    base = re.sub(r"\s*\([^)]*\)", "", table_label).strip() or str(metrics["data"].iloc[0])
    parts = []
    for (split, n_folds, protocol), group in metrics.groupby(["split", "n_folds", "protocol"], sort=True):
        ratio = _split_ratio(rec.run_dir(results_dir, str(group["run_id"].iloc[0]))) if split == "holdout" else None
        text = split_text(str(split), int(n_folds), ratio)
        parts.append(text + (", selected on test" if protocol == "select_on_test" else ""))
    return f"{base} ({'; '.join(parts)})"


def _split_ratio(run_dir: Path) -> float | None:
    return run_setting(run_dir, "split.ratio", float)


def numbers(values: Sequence) -> str:
    """``(0, 1, 2, 3, 4)`` -> ``0–4``; ``(8, 32)`` -> ``8, 32``; floats as ``%g``."""
    if not values:
        return "—"
    if (
        all(isinstance(v, int) for v in values)
        and len(values) > 2
        and list(values) == list(range(values[0], values[-1] + 1))
    ):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def dates(first: str, last: str) -> str:
    """``2026-12-05T01:30:20.1`` .. ``2026-12-05T03:17:02.9`` -> ``2026-12-05 01:30–03:17``."""
    if not first:
        return "—"
    a, b = first[:16].replace("T", " "), last[:16].replace("T", " ")
    if a == b:
        return a
    return f"{a}–{b[11:]}" if a[:10] == b[:10] else f"{a} – {b}"
