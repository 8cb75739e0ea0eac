"""Hand-made run records for tests of what reads records (cells, claims, rendering): one writer, the columns a
trained run's ``metrics.csv`` has that those readers use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def write_record(
    results: Path,
    run_id: str,
    accuracies: list[float],
    seed: int = 0,
    *,
    split: str = "kfold",
    epochs: int = 5,
    max_epochs: int = 10,
    n_test: int = 10,
    history: bool = True,
    folds: bool = False,
    leakage: dict | None = None,
    stopped_early: bool | None = None,
    columns: dict | None = None,
) -> Path:
    """A complete run under ``results/runs/<run_id>``: a ``metrics.csv`` row per fold (one per accuracy), and where
    asked its ``history.csv`` (train_acc rising per epoch), ``folds.npz`` (fold k tests images k..k+n_test-1, the
    same for every run) and ``leakage.json``. ``stopped_early`` defaults to a run that ended before its cap
    (``epochs < max_epochs``): converged by the stopping rule. ``columns``: more metrics.csv columns, a value for
    every fold or a list with one per fold (``train_seconds``, ``git_commit``, ...)."""
    from ferbench.data.leakage import LEAKAGE_FILE

    d = results / "runs" / run_id
    d.mkdir(parents=True)
    rows = [
        dict(
            run_id=run_id,
            seed=seed,
            fold=k,
            n_folds=len(accuracies),
            split=split,
            protocol="standard",
            data="synthetic",
            accuracy=a,
            params=1000,
            n_train=80,
            n_val=10,
            n_test=n_test,
            test_seconds=0.5,
            epochs_run=epochs,
            max_epochs=max_epochs,
            best_epoch=max(epochs - 8, 1) if epochs < max_epochs else epochs,
            stopped_early=epochs < max_epochs if stopped_early is None else stopped_early,
        )
        for k, a in enumerate(accuracies)
    ]
    for name, value in (columns or {}).items():
        for k, row in enumerate(rows):
            row[name] = value[k] if isinstance(value, list) else value
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    if history:
        rows = [
            dict(fold=k, epoch=e, train_acc=0.1 * e + 0.01 * k)
            for k in range(len(accuracies))
            for e in range(1, epochs + 1)
        ]
        pd.DataFrame(rows).to_csv(d / "history.csv", index=False)
    if folds:
        np.savez(d / "folds.npz", **{f"test_{k}": np.arange(n_test) + k for k in range(len(accuracies))})
    if leakage is not None:
        (d / LEAKAGE_FILE).write_text(json.dumps(leakage))
    return d
