"""Aggregate run records into table cells: mean ± sd over seeds x folds, the paper's figure, the gap.

Reads records only; never trains. Each cell keeps its protocol (split, folds, seeds, epochs run).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from ferbench.data.leakage import read_leakage
from ferbench.records import record as rec
from ferbench.results.aggregate import Problem, read_run
from ferbench.results.spec import StatTest, TableSpec

T = TypeVar("T")

FRACTION_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "map",
    "map50",
    "map50_95",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
)


def is_fraction(metric: str) -> bool:
    """Metrics in [0, 1] that a paper may print as percent; counts, sizes and speeds are not."""
    base = metric.split("|")[0].split(":")[-1].split("@")[0]
    return base in FRACTION_METRICS or base.startswith("recall_") or base.endswith("_acc")


@dataclass
class CellResult:
    row: str
    column: str
    row_label: str
    column_label: str
    metric: str
    status: str  # ours | cited | no data | paper only | not run | failed | running | incomplete | corrupt
    paper: float | None = None
    values: np.ndarray = field(default_factory=lambda: np.array([]))
    run_ids: tuple[str, ...] = ()
    protocol: str = ""
    seeds: tuple[int, ...] = ()
    n_folds: int = 0
    epochs_run: str = ""
    max_epochs: int | None = None
    data_used: str = ""
    substituted: str | None = None
    note: str = ""
    """Where an absent data set was looked for."""
    failure: str = ""
    """Why the cell's run failed in this process before writing a record (e.g. an unreadable image)."""
    pairs: tuple[tuple[int, int, str], ...] = ()
    """(seed, fold, digest of that fold's test indices) per value: what pairs two cells' runs."""
    split: str = ""
    test_train_ratio: float = 0.0
    """Test over training-side images of a fold (n2/n1 of the corrected resampled t-test)."""
    leakage: dict | None = None
    """Train/test overlap figures summed over the cell's runs and folds (``leakage.json``); None if unrecorded."""
    problems: tuple[Problem, ...] = ()
    """The cell's runs that have no usable record, and why (read from the records: failed.json, lock, files)."""
    improving_at_cap: int = 0
    """Folds that ran every epoch allowed and whose best validation loss came in the last two: a curve still
    falling where the epochs were capped (a capped profile's cell may be short of what the recipe reaches)."""
    stopped_early: int = 0
    """Folds whose early stopping fired before the epoch cap: converged by the stopping rule."""
    cut_by_cap: int = 0
    """Folds cut by the epoch cap while still improving: under early stopping, every fold that reached the cap
    without the rule firing; with early stopping off (a fixed-epoch protocol), those ``improving_at_cap``."""

    @property
    def converged(self) -> bool:
        """Every fold of every run behind the cell converged (none cut by the cap): its value is the recipe's own,
        not an early snapshot of it. What a claim needs before it may hold, reverse or tie."""
        return self.n > 0 and self.cut_by_cap == 0

    @property
    def n(self) -> int:
        return int(np.isfinite(self.values).sum())

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.values)) if self.n else math.nan

    @property
    def sd(self) -> float:
        return float(np.nanstd(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def delta(self) -> float:
        return self.mean - self.paper if self.paper is not None and self.n else math.nan


def _history_metric(run_dir: Path, metric: str) -> list[float]:
    """``history:train_acc@5`` -> that column at epoch 5 in every fold (NaN where the run stopped sooner)."""
    column, epoch = metric.removeprefix("history:").split("@")
    history = pd.read_csv(run_dir / "history.csv")
    values = []
    for _, fold in history.groupby("fold"):
        at = fold.loc[fold["epoch"] == int(epoch), column]
        values.append(float(at.iloc[0]) if len(at) else math.nan)
    return values


def _derived(metrics: pd.DataFrame, metric: str) -> pd.Series:
    """Columns computed from the record: weight size, test throughput."""
    if metric == "size_kb":
        return metrics["params"] * 4 / 1024
    if metric == "params_m":
        return metrics["params"] / 1e6
    if metric == "macs_m":
        return metrics["macs"] / 1e6
    if metric == "test_images_per_s":
        return metrics["n_test"] / metrics["test_seconds"].clip(lower=1e-9)
    raise KeyError(metric)


def run_values(run_dir: Path, metrics: pd.DataFrame, metric: str) -> list[float]:
    """``metric`` per fold row of one run (``metrics``: its metrics.csv, read once by the caller)."""
    if metric.startswith("history:"):
        return _history_metric(run_dir, metric)
    # "map50|map": the first the record has (a detector's and a classifier's rows share a column)
    name = next((m for m in metric.split("|") if m in metrics), metric.split("|")[-1])
    column = metrics[name] if name in metrics else _derived(metrics, name)
    return [float(v) for v in column]


def aggregate_cell(cell, spec: TableSpec, results_dir: Path) -> CellResult:
    """One ``CellPlan`` -> ``CellResult`` from the records on disk (missing ones are 'not run')."""
    column_key = cell.column.key if cell.column else ""
    paper = cell.row.paper.get(column_key) if cell.row.paper else None
    result = CellResult(
        row=cell.row.key,
        column=column_key,
        row_label=cell.row.label,
        column_label=cell.column.label if cell.column else "",
        metric=cell.metric,
        status=cell.status if cell.status != "run" else "ours",
        paper=float(paper) if paper is not None else None,
        run_ids=tuple(cell.run_ids),
        substituted=cell.substituted,
        note=cell.missing or "",
    )
    if cell.status != "run":
        return result
    if cell.failure:
        result.status, result.failure = "failed", cell.failure
    scale = spec.paper_scale if is_fraction(cell.metric) else 1.0
    values: list[float] = []
    epochs: list[int] = []
    rows: list[pd.DataFrame] = []
    pairs: list[tuple[int, int, str]] = []
    run_dirs: list[Path] = []
    problems: list[Problem] = []
    for run_id in cell.run_ids:
        run_dir = rec.run_dir(results_dir, run_id)
        metrics, problem = read_run(run_dir)
        if problem is not None:
            problems.append(problem)
        if metrics is None:
            continue
        values.extend(v * scale for v in run_values(run_dir, metrics, cell.metric))
        pairs.extend(pair_keys(run_dir, metrics))
        rows.append(metrics)
        run_dirs.append(run_dir)
        epochs.extend(metrics["epochs_run"].astype(int))
        result.improving_at_cap += improving_at_cap(metrics)
        result.stopped_early += stopped_before_cap(metrics)
        result.cut_by_cap += cut_by_cap(metrics, patience_of(run_dir))
    result.problems = tuple(problems)
    if not rows:
        if result.status == "ours":
            result.status = state_of(problems)
        return result
    first = rows[0].iloc[0]
    result.values = np.array(values, dtype=float)
    result.seeds = tuple(int(r["seed"].iloc[0]) for r in rows)
    result.n_folds = int(first["n_folds"])
    result.column_label = folds_as_ran(result.column_label, result.n_folds)
    result.epochs_run = f"{min(epochs)}" if min(epochs) == max(epochs) else f"{min(epochs)}–{max(epochs)}"
    result.max_epochs = int(first["max_epochs"])
    result.data_used = str(first["data"])
    result.protocol = f"split={first['split']}, folds={result.n_folds}, protocol={first['protocol']}"
    result.pairs = tuple(pairs) if len(pairs) == len(values) else ()
    result.split = str(first["split"])
    result.test_train_ratio = test_train_ratio(pd.concat(rows))
    result.leakage = read_leakage(run_dirs)
    return result


def improving_at_cap(metrics: pd.DataFrame) -> int:
    """Folds of one run that used every epoch allowed with their best validation loss in the last two."""
    if not {"best_epoch", "epochs_run", "max_epochs"} <= set(metrics.columns):
        return 0
    ran = metrics["epochs_run"].astype(int)
    capped = ran >= metrics["max_epochs"].astype(int)
    return int((capped & (metrics["best_epoch"].astype(int) >= ran - 1)).sum())


def folds_as_ran(label: str, n_folds: int) -> str:
    """A column label that names a fold count (``CK+ (subject 10-fold)``) says the count its runs had: a capped
    profile's 5 folds are not the paper's 10."""
    return re.sub(r"\b\d+-fold\b", f"{n_folds}-fold", label) if n_folds > 1 else label


def early_stop_fired(metrics: pd.DataFrame) -> pd.Series:
    """Per fold row, did its early stopping fire (``stopped_early``, True/False as a CSV reads it back)."""
    return metrics["stopped_early"].astype(str).str.lower().eq("true")


def stopped_before_cap(metrics: pd.DataFrame) -> int:
    """Folds of one or more runs whose early stopping fired (``stopped_early``) before the epoch cap."""
    if not {"stopped_early", "epochs_run", "max_epochs"} <= set(metrics.columns):
        return 0
    fired = early_stop_fired(metrics)
    return int((fired & (metrics["epochs_run"].astype(int) < metrics["max_epochs"].astype(int))).sum())


def cut_by_cap(metrics: pd.DataFrame, patience: int | None) -> int:
    """Folds of one run cut by the epoch cap while still improving.

    Under early stopping (``patience`` > 0) a fold converged when the rule fired; one that reached the cap first
    was cut, whatever its last epochs did. A run trained for a fixed number of epochs (patience 0: the paper's
    protocol) was cut only where its best epoch was one of the last two. Unknown patience counts as early stopping.
    """
    if patience == 0:
        return improving_at_cap(metrics)
    if not {"epochs_run", "max_epochs"} <= set(metrics.columns):
        return len(metrics)
    return len(metrics) - stopped_before_cap(metrics)


def run_setting(run_dir: Path, dotted: str, cast: Callable[[Any], T]) -> T | None:
    """One setting of a run (``trainer.early_stopping_patience``) from its ``config.yaml``, cast; None where the file
    or the key cannot be read."""
    try:
        node = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        for key in dotted.split("."):
            node = node[key]
        return cast(node)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def patience_of(run_dir: Path) -> int | None:
    """``trainer.early_stopping_patience`` of a run; None where it cannot be read."""
    return run_setting(run_dir, "trainer.early_stopping_patience", int)


STATE_ORDER = ("failed", "corrupt", "running", "incomplete")
"""A cell none of whose runs is complete shows the first of these its runs are in, else 'not run'."""


def state_of(problems: Sequence[Problem]) -> str:
    kinds = {p.kind for p in problems}
    return next((state for state in STATE_ORDER if state in kinds), "not run")


def test_train_ratio(metrics: pd.DataFrame) -> float:
    """Mean n_test / (n_train + n_val) over fold rows (n2/n1); 0 where a record lacks the counts."""
    if not {"n_test", "n_train", "n_val"} <= set(metrics.columns):
        return 0.0
    on_test = metrics["protocol"].eq("select_on_test") if "protocol" in metrics else False
    training = metrics["n_train"] + metrics["n_val"].where(~on_test, 0)  # under select_on_test val *is* test
    return float((metrics["n_test"] / training.clip(lower=1)).mean())


def pair_keys(run_dir: Path, metrics: pd.DataFrame) -> list[tuple[int, int, str]]:
    """(seed, fold, test-index digest) per fold row: two runs pair only where they tested the same images."""
    try:
        with np.load(run_dir / "folds.npz") as folds:
            tests = {int(k.removeprefix("test_")): folds[k] for k in folds.files if k.startswith("test_")}
    except (OSError, ValueError):
        tests = {}
    out = []
    for _, row in metrics.iterrows():
        test = tests.get(int(row["fold"]))
        digest = (
            "" if test is None else hashlib.sha1(f"{row.get('data', '')}".encode() + test.tobytes()).hexdigest()[:12]
        )
        out.append((int(row["seed"]), int(row["fold"]), digest))
    return out


def t_test(cells: Sequence[CellResult], test: StatTest, column: str) -> tuple[float, float, int, int]:
    """Independent-samples t-test (equal variances, as the paper's) of row b against row a in one column."""
    by_key = {(c.row, c.column): c for c in cells}
    a, b = by_key[(test.a, column)].values, by_key[(test.b, column)].values
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, len(a), len(b)
    statistic, p_value = stats.ttest_ind(b, a, equal_var=True)
    return float(statistic), float(p_value), len(a), len(b)
