"""Gather every run record under a results dir: the fold rows of complete runs, and every run that is not.

Nothing is dropped silently: a run without ``metrics.csv`` is *incomplete* (or *running*, while its lock is
held), one with ``failed.json`` is *failed* (reason, fold, epoch), a ``metrics.csv`` that does not parse or
lacks a fold's row or a value every row has is *corrupt* (``results.integrity``). Pure pandas over the
saved records; never trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from ferbench.records import record as rec
from ferbench.records.integrity import REQUIRED_COLUMNS, metrics_problem

ProblemKind = Literal["incomplete", "running", "failed", "corrupt"]


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    run_id: str
    path: Path
    """The file (metrics.csv, failed.json) or run dir the problem is about."""
    detail: str
    folds_done: list[int] = field(default_factory=list)
    """Folds with a complete record (``fold_<k>/metrics.json``)."""
    epoch: int | None = None
    """For failed runs: the epoch that failed."""


def collect_records(results_dir: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Every fold row of every complete run under ``<results_dir>/runs/``, and a Problem for each other run."""
    frames, problems = [], []
    runs = rec.runs_dir(results_dir)
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        frame, problem = read_run(run_dir)
        if frame is not None:
            frames.append(frame)
        if problem is not None:
            problems.append(problem)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    return rows, problems


def read_run(run_dir: Path) -> tuple[pd.DataFrame | None, Problem | None]:
    """A run's fold rows when its record is complete, else why not (failed, running, incomplete, corrupt);
    (None, None) for a run never started."""
    run_dir = Path(run_dir)
    return _read_run(run_dir) if run_dir.is_dir() else (None, None)


def _folds_done(run_dir: Path) -> list[int]:
    done = (p.parent.name.removeprefix("fold_") for p in run_dir.glob("fold_*/metrics.json"))
    return sorted(int(k) for k in done if k.isdigit())


def _read_run(run_dir: Path) -> tuple[pd.DataFrame | None, Problem | None]:
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        return _read_metrics(run_dir, metrics)
    folds = _folds_done(run_dir)
    failed = run_dir / "failed.json"
    if failed.is_file():
        try:
            info = json.loads(failed.read_text())
        except (OSError, ValueError) as exc:
            return None, Problem("corrupt", run_dir.name, failed, f"unreadable failed.json: {exc}", folds)
        detail = f"{info.get('reason', 'unknown reason')} (fold {info.get('fold')}, epoch {info.get('epoch')})"
        return None, Problem("failed", run_dir.name, failed, detail, folds, info.get("epoch"))
    if rec.is_locked(run_dir):
        return None, Problem("running", run_dir.name, run_dir, "being trained by another process now", folds)
    detail = f"no metrics.csv; {len(folds)} fold(s) recorded" + (f": {folds}" if folds else "")
    return None, Problem("incomplete", run_dir.name, run_dir, detail, folds)


def _read_metrics(run_dir: Path, metrics: Path) -> tuple[pd.DataFrame | None, Problem | None]:
    problem = metrics_problem(metrics)
    if problem:
        return None, Problem("corrupt", run_dir.name, metrics, problem, _folds_done(run_dir))
    return pd.read_csv(metrics), None
