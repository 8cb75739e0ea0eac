"""Is a record file whole? ``metrics.csv`` counts only when it parses, has every fold's row and every value a
row needs; anything else is corrupt, named with its path, and set aside (never deleted) so the run is rebuilt."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import pandas as pd

REQUIRED_COLUMNS = ("run_id", "fold", "accuracy")
"""Columns a metrics.csv must have to count: what identifies a row and the metric every table reads."""
FILLED_COLUMNS = ("run_id", "fold", "n_folds", "accuracy", "status")
"""Columns that are never empty in a whole row (where the file has them)."""
NUMERIC_COLUMNS = (
    "fold",
    "n_folds",
    "seed",
    "epochs_run",
    "max_epochs",
    "best_epoch",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "map",
    "params",
    "n_test",
)
"""Columns whose every value is a number (where the file has them): a value that does not parse is damage."""

log = logging.getLogger("ferbench")


def metrics_problem(path: Path) -> str | None:
    """Why ``path`` (a run's metrics.csv) is not a complete record, or None when it is."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc}"
    if not text.strip():
        return "empty file"
    lines = list(csv.reader(io.StringIO(text)))
    short = [i + 1 for i, row in enumerate(lines) if row and len(row) != len(lines[0])]
    if short or not text.endswith("\n"):
        return f"cut short: line {short[0] if short else len(lines)} is incomplete"
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        return f"does not parse: {exc}".strip()
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        return f"missing column(s): {', '.join(missing)}"
    if frame.empty:
        return "no rows"
    empty = [c for c in FILLED_COLUMNS if c in frame.columns and frame[c].isna().any()]
    if empty:
        return f"empty value(s) in {', '.join(empty)}"
    if bad := _not_numbers(frame):
        return f"not a number: {bad}"
    if "n_folds" in frame.columns:
        absent = sorted(set(range(int(frame["n_folds"].max()))) - set(frame["fold"].astype(int)))
        if absent:
            return f"no row for fold(s) {absent} of {int(frame['n_folds'].max())}"
    return None


def _not_numbers(frame: pd.DataFrame) -> str | None:
    """The first value of a numeric column that does not parse as a number (``column='value'``), or None."""
    for column in (c for c in NUMERIC_COLUMNS if c in frame.columns):
        parsed = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column][parsed.isna() & frame[column].notna()]
        if len(bad):
            return f"{column}={bad.iloc[0]!r}"
    return None


COMPANIONS = ("config.yaml", "samples.csv.gz", "folds.npz", "leakage.json")
"""What a complete run's reuse depends on beside ``metrics.csv``: its config, its sample table, its folds' indices
(which pair it with other runs for the claims) and its leakage figures (table notes)."""


def companion_problems(run_dir: Path) -> dict[str, str]:
    """The companions (``COMPANIONS``) that do not read, and, beside a ``metrics.csv`` (a run that says it is
    complete), those that are missing: {file name: why}. A deleted ``folds.npz`` used to be reused silently, and
    the claims then found nothing to pair."""
    import gzip
    import json
    import zipfile

    import numpy as np
    import yaml

    def config(path: Path) -> None:
        if not isinstance(yaml.safe_load(path.read_text()), dict):
            raise ValueError("not a mapping")

    def folds(path: Path) -> None:
        with np.load(path) as arrays:
            if not arrays.files:
                raise ValueError("no arrays")
            for name in arrays.files:
                arrays[name]  # noqa: B018  (reading each array is the check)

    def leakage(path: Path) -> None:
        if not isinstance(json.loads(path.read_text()), dict):
            raise ValueError("not a mapping")

    def samples(path: Path) -> None:
        with gzip.open(path, "rb") as handle:  # decompressed to its end: a cut file fails here
            if not handle.readline().strip():
                raise ValueError("no header line")
            while handle.read(1 << 20):
                pass

    claims_complete = (Path(run_dir) / "metrics.csv").is_file()
    checks = {"config.yaml": config, "samples.csv.gz": samples, "folds.npz": folds, "leakage.json": leakage}
    problems = {}
    for name in COMPANIONS:
        path = Path(run_dir) / name
        if not path.is_file():
            if claims_complete:
                problems[name] = "missing"
            continue
        try:
            checks[name](path)
        except (OSError, ValueError, UnicodeDecodeError, EOFError, zipfile.BadZipFile, yaml.YAMLError) as exc:
            problems[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]
    return problems


def set_aside(path: Path, reason: str, then: str = "the run is rebuilt") -> Path:
    """Rename a damaged file to ``<name>.corrupt-<time>`` beside it and say so in one line; returns the new path."""
    path = Path(path)
    stamp = pd.Timestamp.now().strftime("%Y%m%dT%H%M%S%f")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(aside)
    log.warning("%s is corrupt (%s); kept as %s, %s", path, reason, aside.name, then)
    return aside


def set_aside_damaged_metrics(run_dir: Path) -> None:
    """Before a run is rebuilt: a damaged metrics.csv or companion moves aside, and missing companions of a run
    that said it was complete are named in one line (its fold records stay and are reused; the run's config and
    seeded split write the others again)."""
    path = Path(run_dir) / "metrics.csv"
    problem = metrics_problem(path) if path.is_file() else None
    if problem:
        set_aside(path, problem, "the run is rebuilt from its fold records (folds without one are trained)")
    problems = companion_problems(run_dir)
    missing = [name for name, why in problems.items() if why == "missing"]
    if missing:
        log.warning(
            "%s is damaged: %s missing beside its metrics.csv; written again from the run's config and data "
            "(finished folds are not retrained)",
            run_dir,
            ", ".join(missing),
        )
    for name, why in problems.items():
        if why != "missing":
            set_aside(Path(run_dir) / name, why, "it is written again from the run's config and data")
