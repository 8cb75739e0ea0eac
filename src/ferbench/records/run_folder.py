"""A run's folder before and around training: writable with room to spare, one line on a full disk, and nothing
half-made left after an error (the runner's guards, kept out of ``run.py`` so it reads as the run's steps)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ferbench.errors import FerbenchError, RunBusy, RunFailed, disk_full_in_run

MIN_FREE_BYTES = 200 * 2**20


def ensure_writable(run_dir: Path) -> None:
    """Fail before training, not after an hour, if the record cannot be written; a failed check leaves none of
    the folders it made behind (an empty results dir beside a full disk's one line)."""
    made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        check_room(run_dir)
    except FerbenchError:
        for folder in made:  # deepest first; a folder something else wrote in meanwhile is not ours to empty
            with suppress(OSError):
                folder.rmdir()
        raise


def check_room(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # a probe file of this process's own: two runs starting at once in one results_dir once shared a name,
        # and the second one's unlink failed ("not writable: No such file or directory")
        handle, probe = tempfile.mkstemp(prefix=".write_probe.", dir=run_dir)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise FerbenchError(f"results directory {run_dir} is not writable: {exc.strerror or exc}") from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise FerbenchError(f"results directory {run_dir} has only {free // 2**20} MiB free (need 200 MiB)")


@contextmanager
def disk_full_keeps_folds(run_dir: Path) -> Iterator[None]:
    """A full disk or quota, wherever it strikes (a checkpoint, a record), is one line: the finished folds are
    kept and the same command resumes, so a traceback would only hide the way back."""
    try:
        yield
    except OSError as exc:
        line = disk_full_in_run(exc, run_dir)
        if line is None:
            raise
        raise line from None


KEPT_AFTER = (RunFailed, RunBusy)
"""Errors whose run folder stays: a failed run's failed.json is its record; a busy run's folder is another's."""


@contextmanager
def half_made_removed(run_dir: Path, existed: bool) -> Iterator[None]:
    """An error before any fold started (a bad cache, a config error only training finds) leaves no half-made
    folder that this attempt made; one that existed before, or holds a fold, is kept."""
    try:
        yield
    except Exception as exc:
        if not existed and not isinstance(exc, KEPT_AFTER):
            remove_half_made(run_dir)
        raise


def remove_half_made(run_dir: Path) -> None:
    """Remove ``run_dir`` unless some fold of it began (its ``fold_<k>`` folder exists)."""
    if run_dir.is_dir() and not any(run_dir.glob("fold_*")):
        shutil.rmtree(run_dir, ignore_errors=True)
