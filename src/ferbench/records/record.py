"""The run record: ``<results_dir>/runs/<run_id>/``, one folder per run, written only by that run.

Layout::

    config.yaml        resolved config (written first)
    samples.csv.gz     the images the run saw (path, label, subject, ...), in index order
    folds.npz          train/val/test indices of every fold into samples.csv.gz
    fold_<k>/          one folder per fold, complete when its metrics.json exists
        metrics.json   the fold's row; history.csv; confusion.csv; checkpoints/
    metrics.csv        one row per fold: written last, atomically; its presence means "complete"
    history.csv        per epoch and fold: train/val loss and accuracy
    confusion.csv      per fold: counts, rows = true class, columns = predicted class
    failed.json        present if the run stopped (e.g. NaN loss): reason, fold and epoch
    skipped.csv        with data.skip_corrupt: the images left out (path, reason)
    .lock              flock-ed by the process training the run (released by the OS when it exits or dies)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ferbench import __version__
from ferbench.errors import ConfigError, RunBusy
from ferbench.paths import PACKAGE_DIR
from ferbench.records.atomic import write_csv, write_text

AXES = ("model", "attn", "data", "split", "optim", "loss", "aug", "trainer")
"""The config groups; each record names the choice made on every one."""

IDENTITY_EXCLUDED = (
    "results_dir",
    "data_root",
    "data_dirs",
    "cache_dir",
    "tag",
    "hydra",
    "data.root",
    "data.variant",
    "trainer.progress_bar",
    "trainer.num_workers",
    "trainer.pin_memory",
    "trainer.channels_last",
    "trainer.compile",
    "trainer.compile_mode",
    "trainer.cudnn_benchmark",
    "trainer.threads",
    "trainer.keep_freed_memory",
    "trainer.pack",
    "logger",
)
"""Keys that say where things are or how they look, not what the experiment is: not in the run id."""

OFF_BY_DEFAULT = {
    "model.init": None,
    "model.freeze_epochs": 0,
    "trainer.ema_decay": 0,
    "optim.warmup_epochs": 0,
    "aug.no_aug_epochs": 0,
    "model.iou_class_targets": True,
    "model.center_radius": 2.5,
    "model.class_cost": True,
    "trainer.early_stopping_min_delta": 0.0,
}
"""Options added after records existed: at their off value they stay out of the identity, so old run ids hold."""


def experiment_identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus paths and output locations: what makes two runs the same experiment."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for dotted in IDENTITY_EXCLUDED:
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    for dotted, off in OFF_BY_DEFAULT.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] in (off, None):
            node.pop(leaf)
    for group, key in IDENTITY_BY_CONTENT:
        node = data.get(group)
        if isinstance(node, dict) and node.get(key):
            node[key] = file_identity(str(node[key]))
    return data


IDENTITY_BY_CONTENT = (("model", "init"), ("data", "boxes"))
"""Config keys that may name a file the run reads (``model.init``'s weights, ``data.boxes``'s CSV): the id takes the
file by its bytes, not its path."""


def file_identity(value: str) -> str:
    """A file named in the config by its bytes' digest: edited in place it makes another run; moved or copied it
    keeps the id (the same weights anywhere are the same start). Anything that is not a file (``model.init``'s run
    id) stays as it is."""
    path = Path(value).expanduser()
    return "sha1:" + hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else value


def run_id(cfg: DictConfig, data_fingerprint: str) -> str:
    """``<model>-<attn>-<data>-<split>-s<seed>-<hash>``: readable, and stable for the same experiment.

    The hash covers the config (less paths) and ``data_fingerprint`` (``ferbench.data.identity``): the same
    config on other data is another run; the same data moved elsewhere is the same run.
    """
    identity = {**experiment_identity(cfg), "data_fingerprint": data_fingerprint}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    model, attn, split = (id_part(f"{axis}.name", cfg[axis].name) for axis in ("model", "attn", "split"))
    seed = id_part("seed", f"s{cfg.seed}")
    return f"{model}-{attn}-{data_choice(cfg)}-{split}-{seed}-{digest}"


ID_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
"""What a part of a run id may be: it names a folder under ``runs/``, so never a path (no ``/``, no ``..``)."""
ID_PART_RULE = "letters, digits and _ . + - (starting with a letter or digit; no '/', no '..')"


def id_part(key: str, value: object) -> str:
    """``value`` as a part of a run id, or a ConfigError naming ``key``: ``data.variant=x/../../out`` would
    otherwise put a run's record outside ``results_dir``."""
    text = str(value)
    if is_folder_name(text):
        return text
    raise ConfigError(f"{key}={text!r} cannot be part of a run id (a folder name): use {ID_PART_RULE}")


def is_folder_name(text: str) -> bool:
    """Can ``text`` be a run id or a part of one (one folder's name, never a path)?"""
    return bool(ID_PART.fullmatch(text)) and ".." not in text


def data_choice(cfg: DictConfig) -> str:
    """The data config chosen (``ckplus6``), not its loader (``data.name`` ckplus): what records call the data."""
    variant = cfg.data.get("variant")
    return id_part("data.variant" if variant else "data.name", variant or cfg.data.name)


def axis_choices(cfg: DictConfig) -> dict[str, str]:
    """The choice made on every config group, as a record's columns name it."""
    return {axis: data_choice(cfg) if axis == "data" else str(cfg[axis].name) for axis in AXES}


@dataclass
class RunRecord:
    run_id: str
    run_dir: Path
    metrics: pd.DataFrame
    history: pd.DataFrame
    confusion: pd.DataFrame
    reused: bool = False
    """True when the record already existed and nothing was trained."""

    @classmethod
    def load(cls, run_dir: Path, reused: bool = True) -> RunRecord:
        run_dir = Path(run_dir)
        return cls(
            run_id=run_dir.name,
            run_dir=run_dir,
            metrics=pd.read_csv(run_dir / "metrics.csv"),
            history=_read_optional(run_dir / "history.csv"),
            confusion=_read_optional(run_dir / "confusion.csv"),
            reused=reused,
        )


def _read_optional(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()


def is_complete(run_dir: Path) -> bool:
    """A whole metrics.csv (every fold's row, every value), and its config, samples, folds and leakage files
    beside it, present and readable: a cut or empty metrics.csv does not count, nor one whose companions are
    missing or damaged (the run is then rebuilt from its fold records, its companions written again)."""
    from ferbench.records.integrity import companion_problems, metrics_problem

    metrics = Path(run_dir) / "metrics.csv"
    return metrics.is_file() and metrics_problem(metrics) is None and not companion_problems(run_dir)


def runs_dir(results_dir: Path) -> Path:
    """``<results_dir>/runs``: every run's folder, and nothing else (aggregation lists it, the gallery copies it)."""
    return Path(results_dir) / "runs"


def run_dir(results_dir: Path, run_id: str) -> Path:
    """``<results_dir>/runs/<run_id>``: the one folder a run owns, whether or not it exists yet; a run id that is
    not one folder's name (``../x``, given to ``model.init``) is a ConfigError, never a path elsewhere."""
    if not is_folder_name(str(run_id)):
        raise ConfigError(f"run id {str(run_id)!r} is not a run folder's name: run ids use {ID_PART_RULE}")
    return runs_dir(results_dir) / run_id


def fold_dir(run_dir: Path, fold: int) -> Path:
    """``<run_dir>/fold_<k>``: one fold's own record, complete when its metrics.json exists."""
    return Path(run_dir) / f"fold_{fold}"


BEST_CHECKPOINT = "best.ckpt"
"""In a fold's checkpoint folder: the weights its test used (kept with the record)."""
LAST_CHECKPOINT = "last.ckpt"
"""In a fold's checkpoint folder: the resume state after the last finished epoch (deleted once the fold is recorded)."""


def checkpoint_dir(run_dir: Path, fold: int) -> Path:
    """``<run_dir>/fold_<k>/checkpoints``: the fold's ``best.ckpt`` (kept) and resume state (deleted once done)."""
    return fold_dir(run_dir, fold) / "checkpoints"


def best_checkpoint(run_dir: Path, fold: int = 0) -> Path:
    """The fold's best checkpoint (what its test used): what warm starts and the Grad-CAM step
    (``ferbench.gradcam``) load."""
    return checkpoint_dir(run_dir, fold) / BEST_CHECKPOINT


def fold_is_complete(run_dir: Path, fold: int) -> bool:
    return (fold_dir(run_dir, fold) / "metrics.json").is_file()


def write_fold(run_dir: Path, fold: int, row: dict, history: pd.DataFrame, confusion: pd.DataFrame) -> None:
    """History and confusion first, the metrics row last: the row's presence marks the fold complete."""
    out = fold_dir(run_dir, fold)
    write_csv(out / "history.csv", history)
    write_csv(out / "confusion.csv", confusion)
    write_text(out / "metrics.json", json.dumps(row, indent=1, default=str))


def read_fold_row(run_dir: Path, fold: int) -> dict:
    return json.loads((fold_dir(run_dir, fold) / "metrics.json").read_text())


def finish_run(run_dir: Path, n_folds: int) -> RunRecord:
    """Gather every fold into the run's three CSVs; metrics.csv is written last."""
    rows = [read_fold_row(run_dir, k) for k in range(n_folds)]
    history = pd.concat([_read_optional(fold_dir(run_dir, k) / "history.csv") for k in range(n_folds)])
    confusion = pd.concat([_read_optional(fold_dir(run_dir, k) / "confusion.csv") for k in range(n_folds)])
    write_csv(run_dir / "history.csv", history)
    write_csv(run_dir / "confusion.csv", confusion)
    write_csv(run_dir / "metrics.csv", pd.DataFrame(rows))
    return RunRecord.load(run_dir, reused=False)


LOCK_NAME = ".lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``<run_dir>/.lock`` while training, so two sweeps on one results dir never train a run twice at once.

    Non-blocking: a run locked by another process raises RunBusy (the sweep skips it and goes on). An flock
    belongs to the open file, so the OS releases it when its holder exits or is killed: no stale lock survives.
    """
    path = Path(run_dir) / LOCK_NAME
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"run {Path(run_dir).name} is being trained by another process ({path}); skipped") from None
        yield


def is_locked(run_dir: Path) -> bool:
    """True while some process holds the run's lock (is training it now)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def write_failure(run_dir: Path, reason: str, fold: int, epoch: int | None) -> None:
    payload = {"reason": reason, "fold": fold, "epoch": epoch, "timestamp": pd.Timestamp.now().isoformat()}
    write_text(Path(run_dir) / "failed.json", json.dumps(payload, indent=1))


@cache
def git_commit() -> str:
    """The checkout's commit (``+dirty`` with local changes), or 'unknown' outside a git checkout."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()

        commit = git("rev-parse", "--short=12", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, str]:
    return {"ferbench_version": __version__, "git_commit": git_commit(), "timestamp": pd.Timestamp.now().isoformat()}
