"""The seam between the runner and its trainers: what a fold trains on, and the one result every trainer returns.

Two loops fit a fold: Lightning, one model at a time, a classifier or a detector (``training/lightning/loop.py``),
and the packed loop (``training/packed/loop.py``). Each takes a ``FoldData`` (with the ``Task`` whose builders make
the fold's objects) and a fold and returns a ``FoldResult`` (history, test results, timings, or the failure);
``write_fold_result`` alone turns a result into the fold's record, so a record's columns cannot depend on which
loop made it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn

from ferbench.data.splits import Fold
from ferbench.records import record as rec


@dataclass(frozen=True)
class Task:
    """How one task (classification, detection) becomes objects for a fold: an entry of the factory's ``TASKS``.

    Every loop builds from the entry it is handed (the runner passes it down from ``ferbench.factory``, the one place
    config becomes objects), so ``training/`` never imports the factory above it, and a new task is a new entry."""

    name: str
    model: Callable[[DictConfig, int], nn.Module]
    """(cfg, num_classes) -> the network, unseeded (checks, Grad-CAM, profiles)."""
    model_and_loss: Callable[[DictConfig, int, np.ndarray], tuple[nn.Module, nn.Module]]
    """(cfg, num_classes, the fold's training labels) -> the seeded model and its loss."""
    module: Callable[[DictConfig, nn.Module, nn.Module, int], pl.LightningModule]
    """(cfg, model, loss, num_classes) -> the LightningModule the Lightning loop fits and tests (``test_row``)."""
    datamodule: Callable[..., pl.LightningDataModule]
    """(cfg, images, labels, fold, targets=None, **trainer key overrides) -> the fold's LightningDataModule."""
    pack_member: Callable[[DictConfig, int, np.ndarray], tuple[nn.Module, Any]] | None = None
    """(cfg, num_classes, the fold's training labels) -> the packed loop's unit (model and loss as one) and its
    augmentation; None: this task never trains in a pack."""
    targets: Callable[[DictConfig, Any, np.ndarray, np.ndarray], tuple[list[np.ndarray], dict[str, int]]] | None = None
    """(cfg, source, kept rows, labels) -> per image what it trains on besides its label (a detector's boxes) and
    the counts the record keeps; None: the labels alone."""
    min_classes: int = 2
    """The fewest classes a split may hold (a face detector may know one expression)."""

    @property
    def packs(self) -> bool:
        return self.pack_member is not None


@dataclass
class FoldData:
    """What every fold of a run trains on (the decoded images, their labels, class names, a detector's boxes) and
    the task whose builders make each fold's fresh objects from the config."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    task: Task
    targets: list[np.ndarray] | None = None
    """A detector's face boxes with their labels, per image (``model.task=detection``); None to classify."""


@dataclass
class RunWork:
    """A run's folds still to train, and where its record goes."""

    cfg: DictConfig
    run_id: str
    run_dir: Path
    n_folds: int
    pending: list[Fold]
    failure: str | None = None

    def checkpoint_dir(self, fold: Fold) -> Path:
        return rec.checkpoint_dir(self.run_dir, fold.index)

    def name(self, fold: Fold) -> str:
        return f"{self.run_id} fold {fold.index}"


@dataclass
class FoldResult:
    """One trained and tested fold, whichever trainer fitted it; ``failure`` set when its loss diverged."""

    fold: Fold  # as trained: a smoke run's subset of the training part
    history: pd.DataFrame
    best_epoch: int = 0
    """The epoch whose weights were tested, as the stopping rule chose it (``rules.StoppingRule``): the lowest
    validation loss, or without a validation part the last epoch."""
    test_metrics: dict[str, float] = field(default_factory=dict)
    confusion: torch.Tensor | None = None
    resumed: bool = False
    processes: int = 1  # training processes (DDP ranks); batch_size is per process
    packed: int = 1  # models trained together as one stacked model (1: alone)
    pack_note: str = ""  # why a model that could have been packed was not
    params: int = 0
    macs: int = 0
    train_seconds: float = 0.0
    fit_seconds: float = 0.0
    test_seconds: float = 0.0
    speed: dict = field(default_factory=dict)
    failure: str | None = None
    failed_epoch: int | None = None
    resume_file: Path | None = None
    """The trainer's resume state (``last.ckpt``, ``packed_last.pt``): deleted once the record is written, not
    before, so a kill in between resumes from it."""


def write_fold_result(work: RunWork, result: FoldResult, data: FoldData, skipped: dict, fingerprint: str) -> str | None:
    """The fold's record (``metrics.csv`` row, history, confusion), or its ``failed.json`` and then the line a user
    reads about it."""
    fold = result.fold
    if result.failure:
        rec.write_failure(work.run_dir, result.failure, fold.index, result.failed_epoch)
        return failure_line(work.cfg, work.run_id, fold.index, result.failure, work.run_dir / "failed.json")
    row = fold_row(work, result, data.classes, skipped, fingerprint)
    confusion = pd.DataFrame(result.confusion.numpy(), columns=data.classes)
    confusion.insert(0, "true", data.classes)
    confusion.insert(0, "fold", fold.index)
    rec.write_fold(work.run_dir, fold.index, row, result.history, confusion)
    if result.resume_file is not None:
        result.resume_file.unlink(missing_ok=True)
    return None


def fold_row(work: RunWork, result: FoldResult, classes: list[str], skipped: dict, fingerprint: str) -> dict:
    """A fold's row of ``metrics.csv``: the same columns whether its model trained alone or in a pack."""
    cfg, fold, history = work.cfg, result.fold, result.history
    epochs_run = len(history)
    row = {"run_id": work.run_id, **rec.axis_choices(cfg)}
    row.update(
        seed=cfg.seed,
        fold=fold.index,
        n_folds=work.n_folds,
        protocol=cfg.protocol,
        n_train=len(fold.train),
        n_val=len(fold.val),
        n_test=len(fold.test),
        input_size=cfg.model.input_size,
        in_chans=cfg.model.in_chans,
        max_epochs=cfg.trainer.max_epochs,
        batch_size=cfg.trainer.batch_size,
        lr=cfg.optim.lr,
        data_fingerprint=fingerprint,
    )
    row.update(result.test_metrics)
    row.update(
        status="completed",
        epochs_run=epochs_run,
        best_epoch=result.best_epoch,
        stopped_early=epochs_run < cfg.trainer.max_epochs,
        resumed=result.resumed,
        processes=result.processes,
        packed=result.packed,
        pack_note=result.pack_note,
        params=result.params,
        macs=result.macs,
        train_seconds=round(result.train_seconds, 2),
        fit_seconds_this_process=round(result.fit_seconds, 2),
        test_seconds=round(result.test_seconds, 2),
        train_images_per_s=round(len(fold.train) * epochs_run / max(result.train_seconds, 1e-9), 1),
        test_images_per_s=round(len(fold.test) / max(result.test_seconds, 1e-9), 1),
        **result.speed,
        classes=json.dumps(classes),
        skipped=json.dumps(skipped),
        tag=cfg.get("tag", ""),
        **rec.provenance(),
    )
    return row


def failure_line(cfg: DictConfig, run_id: str, fold: int, reason: str, failed: Path) -> str:
    """What a user reads when a run's loss went NaN: where, the record, and what to try."""
    return (
        f"run {run_id}, fold {fold}: {reason}; recorded in {failed}; try a lower optim.lr (now {cfg.optim.lr}) "
        "or loss/optimiser settings, then run the same command again"
    )
