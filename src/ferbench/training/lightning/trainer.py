"""The Lightning Trainer from the ``trainer`` config: devices, precision, early stopping, checkpoints, callbacks."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from ferbench.quiet import quiet_known_warnings
from ferbench.records.record import BEST_CHECKPOINT
from ferbench.training.lightning.callbacks import EpochLines, ValLossStopping, speed_options, weight_average
from ferbench.training.process import apply_numerics
from ferbench.training.resume import MovableCheckpoint

PROGRESS_REFRESH = 20
"""Batches between progress-bar redraws: a redraw every batch costs more than a small model's step on a GPU."""


def quiet_lightning() -> None:
    """Progress bar on, quiet otherwise: no banner about devices, no hints we have already weighed."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_known_warnings()  # Lightning's, torchmetrics' and scipy's weighed warnings: listed in ferbench.quiet


def build_trainer(cfg, checkpoint_dir: Path | None, has_val: bool, **overrides: Any) -> pl.Trainer:
    """Early stopping and best-checkpoint choice watch ``val_loss``: the validation part, never test.

    ``checkpoint_dir=None`` builds the same Trainer without checkpointing (the benchmark); ``overrides`` go to
    ``pl.Trainer`` as they are (``limit_train_batches``, extra ``callbacks``, ...).
    """
    quiet_lightning()
    t = cfg.trainer
    apply_numerics(t)
    callbacks: list[pl.Callback] = [speed_options(t), *overrides.pop("callbacks", [])]
    if checkpoint_dir is not None:
        callbacks.append(
            MovableCheckpoint(
                dirpath=checkpoint_dir,
                filename=Path(BEST_CHECKPOINT).stem,
                monitor="val_loss" if has_val else None,
                mode="min",
                save_last=True,
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    # always there, patience or not: the rule also says which epoch is the best (the record's best_epoch)
    patience = int(t.get("early_stopping_patience", 0)) if has_val else 0
    callbacks.append(ValLossStopping(patience, float(t.get("early_stopping_min_delta", 0.0))))
    if ema := weight_average(t):
        callbacks.append(ema)
    bar = bool(t.progress_bar) and sys.stderr.isatty()
    if bar:
        callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH, leave=False))
    elif t.progress_bar:  # a log file or a pipe: one line per epoch, not thousands of carriage returns
        callbacks.append(EpochLines())
    options: dict[str, Any] = dict(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,
        deterministic=t.deterministic,
        benchmark=bool(t.get("cudnn_benchmark", False)) and not t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=checkpoint_dir is not None,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
    )
    options.update(overrides)
    return pl.Trainer(**options)
